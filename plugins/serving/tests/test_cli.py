"""`siger serve` refuses bad arguments with clear messages before starting anything."""

import json

import pytest
from typer.testing import CliRunner


@pytest.fixture
def app(plugin_manager):
    from sigerlm.cli import build_app
    from sigerlm_serving import hooks
    from sigerlm_testkit import add_plugin

    add_plugin(plugin_manager, hooks, "serving")
    return build_app(plugin_manager)


@pytest.mark.parametrize(
    "args, message",
    [
        (["serve", "{missing}"], "is not a model folder"),
        (["serve", "{model}", "--adapter", "no-equals-sign"], "expected NAME=PATH"),
        (["serving", "export-intake", "--out", "x.jsonl", "--db", "{missing}"], "does not exist"),
    ],
)
def test_bad_arguments(app, model_dir, tmp_path, args, message):
    args = [a.format(missing=tmp_path / "nothing", model=model_dir) for a in args]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "400", "NO_COLOR": "1"})
    assert result.exit_code != 0
    assert message in " ".join(result.output.replace("│", " ").split())


def siger(*args, env=None, timeout=120):
    """``siger ARGS`` in a subprocess (only the text and serving plugins load)."""
    import os
    import subprocess
    import sys

    keys = ("SIGER_API_KEYS", "SIGER_API_KEYS_FILE", "SIGER_REVIEWER_KEYS", "SIGER_REVIEWER_KEYS_FILE")
    env = {
        **{k: v for k, v in os.environ.items() if k not in keys},
        "SIGER_LOAD_PLUGINS": "text,serving",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-c", "from sigerlm.cli import main; main()", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(result, *fragments):
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() + result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    "env, args, fragments",
    [
        ({"SIGER_API_KEYS": " , "}, [], ["SIGER_API_KEYS is set but holds no key"]),
        ({"SIGER_API_KEYS_FILE": "{empty}"}, [], ["SIGER_API_KEYS_FILE", "holds no key"]),
        ({"SIGER_API_KEYS_FILE": "{comments}"}, [], ["holds no key"]),
        ({"SIGER_API_KEYS_FILE": "{missing}"}, [], ["SIGER_API_KEYS_FILE", "does not exist"]),
        ({"SIGER_REVIEWER_KEYS": ","}, [], ["SIGER_REVIEWER_KEYS is set but holds no key"]),
        ({}, ["--api-key", ""], ["a key is empty"]),
        ({}, ["--api-key", "k", "--reviewer-key", "k"], ["a reviewer key cannot also be an API key"]),
    ],
)
def test_empty_or_missing_key_material_stops_the_server_at_start(model_dir, tmp_path, env, args, fragments):
    (tmp_path / "empty").write_text("")
    (tmp_path / "comments").write_text("# no keys here\n\n   \n")
    env = {
        k: v.format(empty=tmp_path / "empty", comments=tmp_path / "comments", missing=tmp_path / "nope")
        for k, v in env.items()
    }
    result = siger("serve", model_dir, "--port", "1", "--db", tmp_path / "s.db", *args, env=env)
    one_line_error(result, *fragments)
    assert not (tmp_path / "s.db").exists()  # refused before anything started


def newer_database(path):
    import sqlite3

    from sigerlm_serving.store import SCHEMA_VERSION, Store

    Store(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["directory", "corrupt", "newer", "other-program"])
def test_serve_refuses_a_bad_database_in_one_line(model_dir, tmp_path, kind):
    import sqlite3

    db = tmp_path / "serving.db"
    if kind == "directory":
        db.mkdir()
    elif kind == "corrupt":
        db.write_bytes(b"this is not an SQLite file at all\n" * 100)
    elif kind == "newer":
        newer_database(db)
    else:
        other = sqlite3.connect(db)
        other.execute("CREATE TABLE accounts (id INTEGER, balance REAL)")
        other.commit()
        other.close()
    before = db.read_bytes() if db.is_file() else None
    line = one_line_error(siger("serve", model_dir, "--port", "1", "--db", db), str(db))
    assert {"directory": "is a directory", "corrupt": "not a usable", "newer": "newer than this server's"}.get(
        kind, "another program's tables"
    ) in line
    if before is not None:
        assert db.read_bytes() == before  # left as it was (not switched to WAL, not migrated)


def approved_db(path, make_client):
    client = make_client(db=path, reviewer_keys=["rev"])
    rid = client.post("/v1/learning/intake", json={"instruction": "a", "output": "b", "consent": True}).json()["id"]
    client.post(
        "/v1/learning/approval",
        json={"ids": [rid], "decision": "approve", "reviewer": "r"},
        headers={"X-Siger-API-Key": "rev"},
    )
    return rid


@pytest.mark.slow
def test_export_intake_refuses_bad_targets_and_databases(make_client, tmp_path):
    db = tmp_path / "serving.db"
    approved_db(db, make_client)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep")
    one_line_error(siger("serving", "export-intake", "--db", db, "--out", folder), str(folder), "is a folder")
    one_line_error(siger("serving", "export-intake", "--db", db, "--out", folder, "--force"), "is a folder")
    assert (folder / "keep.txt").read_text() == "keep"
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("my notes\n")
    one_line_error(siger("serving", "export-intake", "--db", db, "--out", unrelated), str(unrelated), "--force")
    assert unrelated.read_text() == "my notes\n"
    assert siger("serving", "export-intake", "--db", db, "--out", unrelated, "--force").returncode == 0
    assert json.loads(unrelated.read_text()) == {"instruction": "a", "output": "b"}
    # an earlier export is replaced without --force
    assert siger("serving", "export-intake", "--db", db, "--out", unrelated).returncode == 0
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"\x00garbage" * 1000)
    one_line_error(siger("serving", "export-intake", "--db", corrupt, "--out", tmp_path / "x.jsonl"), str(corrupt))
    newer = tmp_path / "newer.db"
    newer_database(newer)
    one_line_error(siger("serving", "export-intake", "--db", newer, "--out", tmp_path / "x.jsonl"), "newer")
    as_db = tmp_path / "dir.db"
    as_db.mkdir()
    one_line_error(siger("serving", "export-intake", "--db", as_db, "--out", tmp_path / "x.jsonl"), "is a directory")
    assert not (tmp_path / "x.jsonl").exists()


def test_review_lists_and_decides_locally(app, make_client, tmp_path):
    db = tmp_path / "serving.db"
    client = make_client(db=db)
    ids = [
        r["id"]
        for r in client.post(
            "/v1/learning/intake/batch",
            json={
                "records": [
                    {"instruction": "tabik pun", "output": "salam", "consent": True},
                    {"instruction": "catat", "output": "ok", "consent": True, "domain": "crm"},
                ]
            },
        ).json()["results"]
    ]
    runner = CliRunner()
    listed = runner.invoke(app, ["serving", "review", "--db", str(db)])
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["id"] for r in rows] == ids and rows[1]["status"] == "quarantine"
    result = runner.invoke(app, ["serving", "review", "--db", str(db), "--approve", ids[0], "--approve", ids[1]])
    assert result.exit_code != 0  # no --reviewer
    result = runner.invoke(
        app, ["serving", "review", "--db", str(db), "--approve", ids[0], "--approve", ids[1], "--reviewer", "rina"]
    )
    assert result.exit_code != 0 and "high_risk_needs_acknowledgement" in result.stdout
    result = runner.invoke(
        app,
        ["serving", "review", "--db", str(db), "--approve", ids[1], "--reviewer", "rina", "--acknowledge-high-risk"],
    )
    assert result.exit_code == 0, result.output
    store = client.app.state.siger.store
    assert [store.get_intake(i)["status"] for i in ids] == ["approved", "approved"]
    assert store.get_intake(ids[1])["decided_by"] == "local"
