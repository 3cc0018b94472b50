"""Persistence: a restart loses nothing, acknowledged intake survives SIGKILL, migrations,
and the export of approved intake."""

import json
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import pytest

from sigerlm_serving.store import MIGRATIONS, SCHEMA_VERSION, Store, _statements


def test_the_store_is_wal_with_full_sync_and_the_current_schema(tmp_path):
    store = Store(tmp_path / "s.db")
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert store.schema_version == SCHEMA_VERSION == len(MIGRATIONS)
    store.close()


def test_an_old_database_is_migrated(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    for statement in _statements(MIGRATIONS[0]):
        db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    db.execute(
        "INSERT INTO intake (id, status, domain, risk, record, redactions, created) "
        "VALUES ('old', 'candidate', 'general', 'normal', '{}', '{}', 0)"
    )
    db.commit()
    db.close()
    store = Store(path)
    assert store.schema_version == SCHEMA_VERSION
    assert store.get_intake("old")["consent"] is True
    store.close()


def test_a_newer_database_is_refused(tmp_path):
    path = tmp_path / "new.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(Exception, match="newer than this server"):
        Store(path)


def test_deleting_a_session_removes_its_memory_from_the_index(tmp_path):
    store = Store(tmp_path / "s.db")
    sid = store.create_session()["id"]
    store.add_memory(
        sid,
        "document",
        "tekwan soup",
        [("tekwan soup", 2)],
        title=None,
        trusted=False,
        original_tokens=2,
        stored_tokens=2,
    )
    assert store.memory_chunks(sid, "tekwan", 5)
    store.delete_session(sid)
    assert store._db.execute("SELECT COUNT(*) FROM memory_fts WHERE memory_fts MATCH 'tekwan'").fetchone()[0] == 0
    store.close()


def test_a_restart_loses_nothing(make_client, tmp_path):
    db = tmp_path / "restart.db"
    client = make_client(db=db)
    sid = client.post("/v1/chat", json={"message": "Halo", "max_new_tokens": 4, "system": "S"}).json()["session_id"]
    client.post(f"/v1/chat/{sid}/memory/fact", json={"text": "Nama saya Sari."})
    client.post(f"/v1/chat/{sid}/memory/document", json={"text": "Pempek dari Palembang.", "title": "d"})
    client.post("/v1/feedback/rating", json={"rating": 1, "session_id": sid})
    rid = client.post("/v1/learning/intake", json={"instruction": "a", "output": "b", "consent": True}).json()["id"]
    before = (
        client.get(f"/v1/sessions/{sid}").json(),
        client.get(f"/v1/chat/{sid}/memory").json(),
        client.get("/v1/learning/stats").json(),
    )
    client.__exit__(None, None, None)  # shuts the app down: scheduler and store close
    again = make_client(db=db)
    after = (
        again.get(f"/v1/sessions/{sid}").json(),
        again.get(f"/v1/chat/{sid}/memory").json(),
        again.get("/v1/learning/stats").json(),
    )
    assert after == before
    assert again.app.state.siger.store.get_intake(rid)["status"] == "candidate"
    assert [f["kind"] for f in again.app.state.siger.store.feedback()] == ["rating"]
    assert again.post("/v1/chat", json={"message": "lagi", "session_id": sid, "max_new_tokens": 2}).status_code == 200


@pytest.mark.slow
def test_sigkill_during_a_burst_of_intake_writes_loses_no_acknowledged_record(
    endless_model_dir, tmp_path, start_server
):
    db = tmp_path / "burst.db"
    server = start_server(endless_model_dir, db, log=tmp_path / "server.log")
    acknowledged, lock, stop = [], threading.Lock(), threading.Event()

    def writer(n):
        with httpx.Client(base_url=server.url, timeout=10) as http:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    r = http.post(
                        "/v1/learning/intake", json={"instruction": f"w{n} record {i}", "output": "ok", "consent": True}
                    )
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 201:
                    with lock:
                        acknowledged.append(r.json()["id"])

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(acknowledged) < 150 and time.monotonic() < deadline:
        time.sleep(0.02)
    server.kill()  # SIGKILL mid-burst: writes are in flight
    stop.set()
    for t in threads:
        t.join(30)
    assert len(acknowledged) >= 150
    store = Store(db)
    missing = set(acknowledged) - store.intake_ids()
    store.close()
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged records lost"
    again = start_server(endless_model_dir, db, log=tmp_path / "server2.log")
    assert httpx.get(again.url + "/v1/learning/stats").json()["total"] >= len(acknowledged)


def test_export_intake_writes_approved_records_as_instruction_jsonl(make_client, tmp_path):
    db = tmp_path / "export.db"
    client = make_client(db=db, reviewer_keys=["rev"])
    ids = [
        r["id"]
        for r in client.post(
            "/v1/learning/intake/batch",
            json={
                "records": [
                    {"instruction": "Terjemahkan: tabik pun", "output": "Salam hormat", "consent": True, "system": "S"},
                    {"instruction": "Email saya sari@example.com", "input": "x", "output": "ok", "consent": True},
                    {"instruction": "not approved", "output": "no", "consent": True},
                ]
            },
        ).json()["results"]
    ]
    client.post(
        "/v1/learning/approval",
        json={"ids": ids[:2], "decision": "approve", "reviewer": "r"},
        headers={"X-Siger-API-Key": "rev"},
    )
    out = tmp_path / "approved.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from sigerlm.cli import main; main()",
            "serving",
            "export-intake",
            "--db",
            str(db),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == [
        {"instruction": "Terjemahkan: tabik pun", "output": "Salam hormat", "system": "S"},
        {"instruction": "Email saya [REDACTED_EMAIL]", "input": "x", "output": "ok"},
    ]
    from sigerlm_text.chat import instruction_to_messages

    assert all(instruction_to_messages(r) for r in rows)  # the text plugin's instruction format
