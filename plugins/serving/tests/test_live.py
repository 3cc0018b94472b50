"""A real ``siger serve`` on 127.0.0.1: the official openai client, 16 concurrent streaming
clients, and a client that disconnects."""

import json
import threading
import time

import httpx
import pytest

pytestmark = pytest.mark.slow


def assert_cancelled_once(live_server, before):
    """Within 10 s the scheduler counts one more cancelled request and has none running, long
    before the 50000 tokens asked for were decoded."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = httpx.get(live_server.url + "/v1/status").json()["scheduler"]
        if status["cancelled"] > before["cancelled"] and status["active"] == 0:
            break
        time.sleep(0.05)
    assert status["cancelled"] == before["cancelled"] + 1 and status["active"] == 0
    assert status["tokens"] - before["tokens"] < 50000


def test_openai_client_chat_and_completions(live_server):
    from openai import OpenAI

    client = OpenAI(base_url=live_server.url + "/v1", api_key="unused", max_retries=0, timeout=30)
    assert [m.id for m in client.models.list().data] == ["SIGER"]
    chat = client.chat.completions.create(
        model="SIGER",
        max_tokens=8,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Halo, apa kabar?"}],
    )
    assert chat.choices[0].message.role == "assistant" and chat.choices[0].finish_reason == "length"
    assert chat.usage.completion_tokens == 8 and chat.choices[0].message.content
    parts, reasons = [], []
    for chunk in client.chat.completions.create(
        model="SIGER", max_tokens=8, stream=True, messages=[{"role": "user", "content": "Halo, apa kabar?"}]
    ):
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            reasons.append(chunk.choices[0].finish_reason)
    assert "".join(parts) == chat.choices[0].message.content and reasons[-1] == "length"
    done = client.completions.create(model="SIGER", prompt="Saya mau makan", max_tokens=6)
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(model="SIGER", prompt="Saya mau makan", max_tokens=6, stream=True)
    )
    assert done.choices[0].text == streamed and done.usage.completion_tokens == 6


def read_sse(response):
    events, event = [], None
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            events.append((event, json.loads(line[6:])))
    return events


def test_16_concurrent_streaming_clients(live_server):
    results, errors = [None] * 16, []
    start = threading.Barrier(16)

    def client(i):
        try:
            start.wait()
            body = {"prompt": f"Saya mau makan {i}", "max_new_tokens": 200, "stream": True}
            with httpx.stream("POST", live_server.url + "/v1/generate", json=body, timeout=60) as r:
                assert r.status_code == 200
                results[i] = read_sse(r)
        except Exception as exc:  # reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    for events in results:
        assert events[-1][0] == "done" and events[-1][1]["usage"]["completion_tokens"] == 200
        assert "".join(d["text"] for e, d in events if e == "delta") == events[-1][1]["text"]
    status = httpx.get(live_server.url + "/v1/status").json()
    assert status["scheduler"]["max_batch_seen"] >= 4  # they shared decode steps


def test_a_client_that_disconnects_stops_its_generation(live_server):
    before = httpx.get(live_server.url + "/v1/status").json()["scheduler"]
    body = {"prompt": "Halo", "max_new_tokens": 50000, "stream": True}
    with httpx.stream("POST", live_server.url + "/v1/generate", json=body, timeout=30) as r:
        deltas = 0
        for line in r.iter_lines():
            deltas += line.startswith("event: delta")
            if deltas >= 3:
                break
    assert_cancelled_once(live_server, before)


def test_a_non_streaming_client_that_gives_up_stops_its_generation(live_server):
    before = httpx.get(live_server.url + "/v1/status").json()["scheduler"]
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
        httpx.post(live_server.url + "/v1/generate", json={"prompt": "Halo", "max_new_tokens": 50000}, timeout=0.5)
    assert_cancelled_once(live_server, before)


def test_twenty_parallel_chat_turns_on_one_session_keep_the_history_alternating(live_server):
    sid = httpx.post(live_server.url + "/v1/sessions", json={}).json()["id"]
    replies, errors = {}, []
    start = threading.Barrier(20)

    def turn(i):
        try:
            start.wait()
            body = {"message": f"pesan nomor {i}", "session_id": sid, "max_new_tokens": 3}
            r = httpx.post(live_server.url + "/v1/chat", json=body, timeout=120)
            assert r.status_code == 200, r.text
            replies[i] = r.json()
        except Exception as exc:  # reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=turn, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not errors
    messages = httpx.get(f"{live_server.url}/v1/sessions/{sid}").json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"] * 20
    by_id = {m["id"]: k for k, m in enumerate(messages)}
    for i, reply in replies.items():  # each reply right after the message it answers
        k = by_id[reply["message_id"]]
        assert messages[k - 1]["content"] == f"pesan nomor {i}" and messages[k]["content"] == reply["text"]
    # turns ran one after another: each prompt held the turns before it
    assert len({r["usage"]["prompt_tokens"] for r in replies.values()}) == 20


def test_stop_and_send_again_stores_the_cancelled_reply_in_its_place(live_server):
    """The web page's Stop button closes the stream, and the user sends again: the next message
    must come after the stopped reply, which is kept and marked cancelled (never U U A U A). The
    new message is sent at once, before the stream is closed, so it reaches the server before
    the server has even noticed the stop."""
    sid = httpx.post(live_server.url + "/v1/sessions", json={}).json()["id"]
    answers = []

    def send_again(text):
        again = {"message": text, "session_id": sid, "max_new_tokens": 2}
        answers.append(httpx.post(live_server.url + "/v1/chat", json=again, timeout=60).status_code)

    for round_ in range(3):
        body = {"message": f"cerita panjang {round_}", "session_id": sid, "max_new_tokens": 1900, "stream": True}
        with httpx.stream("POST", live_server.url + "/v1/chat", json=body, timeout=30) as r:
            deltas = 0
            for line in r.iter_lines():
                deltas += line.startswith("event: delta")
                if deltas >= 2:
                    sender = threading.Thread(target=send_again, args=(f"lagi {round_}",))
                    sender.start()
                    time.sleep(0.2)  # the new message is in; then Stop
                    break
        sender.join(60)
    assert answers == [200, 200, 200]
    messages = httpx.get(f"{live_server.url}/v1/sessions/{sid}").json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"] * 6
    assert [m["content"] for m in messages[::2]] == [
        text for r in range(3) for text in (f"cerita panjang {r}", f"lagi {r}")
    ]
    assert [m["finish_reason"] for m in messages[1::2]] == ["cancelled", "length"] * 3
