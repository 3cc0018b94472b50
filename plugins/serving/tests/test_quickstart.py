"""`siger serve` on the quickstart model (trained with the manifest's test overrides) answers
every endpoint; the official openai client and SSE work on it."""

from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quickstart_model(tmp_path_factory):
    import os

    from sigerlm.manifest import load_manifest
    from sigerlm.run import execute
    from sigerlm_testkit import manifest_test_overrides

    folder = tmp_path_factory.mktemp("quickstart")
    path = ROOT / "registry" / "manifests" / "quickstart.yaml"
    old, cwd = os.environ.get("SIGER_CACHE_DIR"), os.getcwd()
    os.environ["SIGER_CACHE_DIR"] = str(folder / "cache")
    os.chdir(ROOT)
    try:
        resolved, pm = load_manifest(path, [*manifest_test_overrides(path), f"out_dir={folder / 'run'}"])
        execute(resolved, pm)
    finally:
        os.chdir(cwd)
        if old is None:
            os.environ.pop("SIGER_CACHE_DIR", None)
        else:
            os.environ["SIGER_CACHE_DIR"] = old
    return folder / "run" / "model"


def test_every_endpoint_on_the_quickstart_model(quickstart_model, start_server, tmp_path):
    from openai import OpenAI

    server = start_server(
        quickstart_model,
        tmp_path / "q.db",
        "--api-key",
        "k-quick",
        "--reviewer-key",
        "k-review",
        log=tmp_path / "server.log",
    )
    http = httpx.Client(base_url=server.url, headers={"X-Siger-API-Key": "k-quick"}, timeout=60)
    sampling = {
        "max_new_tokens": 8,
        "temperature": 0.7,
        "top_k": 20,
        "top_p": 0.9,
        "repetition_penalty": 1.1,
        "stop": ["\n\n"],
        "seed": 1,
    }

    def ok(response, status=200):
        assert response.status_code == status, (response.request.url, response.text)
        return response.json() if response.status_code != 204 else None

    assert httpx.get(server.url + "/health").json()["model"].startswith("SIGER")
    assert '<script src="/static/app.js"' in httpx.get(server.url + "/").text
    assert httpx.get(server.url + "/v1/status").status_code == 401
    status = ok(http.get("/v1/status"))
    assert status["model"].startswith("SIGER") and status["plugins"]["text"]["version"]
    assert ok(http.post("/v1/generate", json={"prompt": "Nyak haga", **sampling}))["usage"]["completion_tokens"] <= 8
    with http.stream("POST", "/v1/generate", json={"prompt": "Nyak haga", "stream": True, **sampling}) as r:
        body = r.read().decode()
    assert r.status_code == 200 and "event: done" in body
    chat = ok(http.post("/v1/chat", json={"message": "Halo", **sampling}))
    sid = chat["session_id"]
    with http.stream("POST", "/v1/chat", json={"message": "Lagi", "session_id": sid, "stream": True, **sampling}) as r:
        body = r.read().decode()
    assert "event: start" in body and "event: done" in body
    created = ok(http.post("/v1/sessions", json={"system": "Jawab singkat."}), 201)
    assert len(ok(http.get(f"/v1/sessions/{sid}"))["messages"]) == 4
    ok(http.post(f"/v1/chat/{sid}/memory/document", json={"text": "Pempek berasal dari Palembang."}), 201)
    saved = ok(
        http.post(
            f"/v1/chat/{sid}/memory/tool-result",
            json={"text": "\n".join(f"line {i}" for i in range(300)) + "\nERROR at /x.py"},
        ),
        201,
    )
    assert saved["tokens_saved"] > 0
    ok(http.post(f"/v1/chat/{sid}/memory/fact", json={"text": "Nama saya Sari."}), 201)
    assert len(ok(http.get(f"/v1/chat/{sid}/memory"))["items"]) == 3
    ok(http.post("/v1/chat", json={"message": "Apa itu pempek?", "session_id": sid, **sampling}))
    ok(http.post("/v1/feedback/rating", json={"rating": 1, "session_id": sid}), 201)
    ok(http.post("/v1/feedback/preference", json={"prompt": "p", "chosen": "a", "rejected": "b"}), 201)
    ok(http.post("/v1/feedback/report", json={"category": "other", "text": "x"}), 201)
    one = ok(http.post("/v1/learning/intake", json={"instruction": "a", "output": "b", "consent": True}), 201)
    ok(
        http.post(
            "/v1/learning/intake/batch", json={"records": [{"instruction": "c", "output": "d", "consent": True}]}
        ),
        201,
    )
    decide = {"ids": [one["id"]], "decision": "approve", "reviewer": "r"}
    assert http.post("/v1/learning/approval", json=decide).status_code == 403  # a client key is no reviewer
    ok(http.post("/v1/learning/approval", json=decide, headers={"X-Siger-API-Key": "k-review"}))
    assert ok(http.get("/v1/learning/stats"))["total"] == 2
    client = OpenAI(base_url=server.url + "/v1", api_key="k-quick", max_retries=0)
    model = client.models.list().data[0].id
    assert (
        client.chat.completions.create(model=model, max_tokens=6, messages=[{"role": "user", "content": "Halo"}])
        .choices[0]
        .message
    )
    assert (
        "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(
                model=model, max_tokens=6, stream=True, messages=[{"role": "user", "content": "Halo"}]
            )
            if c.choices
        )
        is not None
    )
    assert client.completions.create(model=model, prompt="Nyak", max_tokens=4).usage.completion_tokens <= 4
    ok(http.delete(f"/v1/chat/{created['id']}"), 204)
    http.close()
