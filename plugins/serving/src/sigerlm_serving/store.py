"""The SQLite store: sessions, messages, memory (FTS5), feedback and learning intake.

One file, WAL mode, ``synchronous=FULL``: a write is committed (and its WAL frame synced)
before the request that made it is answered, so an acknowledged write survives a crash or a
SIGKILL. The schema has a version (``PRAGMA user_version``) and ordered migrations; opening an
older file upgrades it in one transaction. Several server processes may share the file.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sigerlm.errors import SigerError

MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY, created REAL NOT NULL, updated REAL NOT NULL,
        system TEXT, adapter TEXT, title TEXT
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        role TEXT NOT NULL, content TEXT NOT NULL, created REAL NOT NULL, finish_reason TEXT
    );
    CREATE INDEX messages_by_session ON messages(session_id, id);
    CREATE TABLE memory_items (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        kind TEXT NOT NULL CHECK (kind IN ('document', 'tool_result', 'fact')),
        title TEXT, trusted INTEGER NOT NULL, content TEXT NOT NULL,
        original_tokens INTEGER NOT NULL, stored_tokens INTEGER NOT NULL, created REAL NOT NULL
    );
    CREATE TABLE memory_chunks (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        item_id INTEGER NOT NULL REFERENCES memory_items(id) ON DELETE CASCADE,
        session_id TEXT NOT NULL, seq INTEGER NOT NULL, content TEXT NOT NULL,
        tokens INTEGER NOT NULL, created REAL NOT NULL
    );
    CREATE INDEX chunks_by_session ON memory_chunks(session_id, id);
    CREATE VIRTUAL TABLE memory_fts USING fts5(
        content, content='memory_chunks', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
    );
    CREATE TRIGGER memory_chunks_ai AFTER INSERT ON memory_chunks BEGIN
        INSERT INTO memory_fts(rowid, content) VALUES (new.id, new.content);
    END;
    CREATE TRIGGER memory_chunks_ad AFTER DELETE ON memory_chunks BEGIN
        INSERT INTO memory_fts(memory_fts, rowid, content) VALUES ('delete', old.id, old.content);
    END;
    CREATE TABLE feedback (
        id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, session_id TEXT,
        payload TEXT NOT NULL, created REAL NOT NULL
    );
    CREATE TABLE intake (
        id TEXT PRIMARY KEY, status TEXT NOT NULL, domain TEXT NOT NULL, risk TEXT NOT NULL,
        record TEXT NOT NULL, redactions TEXT NOT NULL, source TEXT, created REAL NOT NULL,
        decided REAL, reviewer TEXT, note TEXT
    );
    CREATE INDEX intake_by_status ON intake(status);
    """,
    # 2: consent is recorded with each intake record; feedback is listed by session
    """
    ALTER TABLE intake ADD COLUMN consent INTEGER NOT NULL DEFAULT 1;
    CREATE INDEX feedback_by_session ON feedback(session_id);
    """,
    # 3: who submitted and who decided an intake record (key ids, never keys); a reply names
    # the message it answers, so a session's history lists each message with its reply
    """
    ALTER TABLE intake ADD COLUMN submitted_by TEXT;
    ALTER TABLE intake ADD COLUMN decided_by TEXT;
    ALTER TABLE messages ADD COLUMN reply_to INTEGER;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
INTAKE_STATUSES = ("candidate", "quarantine", "approved", "rejected")


class StoreError(SigerError):
    """The database file cannot be used; the message names it and says why."""


class Store:
    """Thread-safe access to one SQLite file (one connection, one lock per process)."""

    def __init__(self, path: str | Path, migrate_to: int = SCHEMA_VERSION, create: bool = True):
        self.path = Path(path)
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a directory, not a database file")
        if not create and not self.path.is_file():
            raise StoreError(f"{self.path} does not exist")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot create its folder ({exc.strerror or exc})") from None
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the database ({exc})") from None
        try:
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA busy_timeout = 30000")
            self._check_schema()  # before anything changes the file: it may be another program's
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"{self.path}: the database could not switch to WAL mode (it is in {mode} mode)")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("PRAGMA foreign_keys = ON")
            self._migrate(migrate_to)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(f"{self.path} is not a usable SigerLM serving database ({exc})") from None
        except BaseException:
            self._db.close()
            raise

    # -- schema ------------------------------------------------------------------------------------
    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _check_schema(self) -> None:
        version = self.schema_version
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this server's "
                f"{SCHEMA_VERSION}: upgrade sigerlm-serving"
            )
        if version == 0 and self._db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]:
            raise StoreError(f"{self.path} holds another program's tables, not a SigerLM serving database")

    def _migrate(self, target: int) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")  # one process migrates; the others wait, then see it done
            try:
                version = self.schema_version
                self._check_schema()
                for number in range(version + 1, target + 1):
                    for statement in _statements(MIGRATIONS[number - 1]):
                        self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version = {number}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _write(self, fn: Any) -> Any:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self._db)
                self._db.execute("COMMIT")
                return result
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- sessions ----------------------------------------------------------------------------------
    def create_session(self, system: str | None = None, adapter: str | None = None, title: str | None = None) -> dict:
        sid, now = uuid.uuid4().hex, time.time()
        self._write(
            lambda db: db.execute(
                "INSERT INTO sessions (id, created, updated, system, adapter, title) VALUES (?, ?, ?, ?, ?, ?)",
                (sid, now, now, system, adapter, title),
            )
        )
        return self.get_session(sid)

    def get_session(self, sid: str) -> dict | None:
        rows = self._read("SELECT * FROM sessions WHERE id = ?", (sid,))
        return dict(rows[0]) if rows else None

    def delete_session(self, sid: str) -> bool:
        return self._write(lambda db: db.execute("DELETE FROM sessions WHERE id = ?", (sid,)).rowcount) > 0

    def add_message(
        self, sid: str, role: str, content: str, finish_reason: str | None = None, reply_to: int | None = None
    ) -> int:
        """Store a message; a reply names the message it answers (``reply_to``)."""

        def write(db: sqlite3.Connection) -> int:
            now = time.time()
            cursor = db.execute(
                "INSERT INTO messages (session_id, role, content, created, finish_reason, reply_to) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (sid, role, content, now, finish_reason, reply_to),
            )
            db.execute("UPDATE sessions SET updated = ? WHERE id = ?", (now, sid))
            return int(cursor.lastrowid)

        return self._write(write)

    def messages(self, sid: str) -> list[dict]:
        """A session's messages, each reply right after the message it answers."""
        return [
            dict(r)
            for r in self._read(
                "SELECT id, role, content, created, finish_reason FROM messages WHERE session_id = ? "
                "ORDER BY COALESCE(reply_to, id), id",
                (sid,),
            )
        ]

    def message_session(self, mid: int) -> str | None:
        """The session a message belongs to (None: no such message)."""
        rows = self._read("SELECT session_id FROM messages WHERE id = ?", (mid,))
        return rows[0]["session_id"] if rows else None

    # -- memory ------------------------------------------------------------------------------------
    def add_memory(
        self,
        sid: str,
        kind: str,
        content: str,
        chunks: Sequence[tuple[str, int]],
        *,
        title: str | None,
        trusted: bool,
        original_tokens: int,
        stored_tokens: int,
    ) -> int:
        def write(db: sqlite3.Connection) -> int:
            now = time.time()
            item = db.execute(
                "INSERT INTO memory_items (session_id, kind, title, trusted, content, original_tokens, stored_tokens, "
                "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (sid, kind, title, int(trusted), content, original_tokens, stored_tokens, now),
            ).lastrowid
            db.executemany(
                "INSERT INTO memory_chunks (item_id, session_id, seq, content, tokens, created) VALUES (?, ?, ?, ?, ?, ?)",  # noqa: E501
                [(item, sid, i, text, tokens, now) for i, (text, tokens) in enumerate(chunks)],
            )
            db.execute("UPDATE sessions SET updated = ? WHERE id = ?", (now, sid))
            return int(item)

        return self._write(write)

    def memory_items(self, sid: str) -> list[dict]:
        rows = self._read(
            "SELECT m.id, m.kind, m.title, m.trusted, m.content, m.original_tokens, m.stored_tokens, m.created, "
            "(SELECT COUNT(*) FROM memory_chunks c WHERE c.item_id = m.id) AS chunks "
            "FROM memory_items m WHERE m.session_id = ? ORDER BY m.id",
            (sid,),
        )
        return [{**dict(r), "trusted": bool(r["trusted"])} for r in rows]

    def memory_chunks(self, sid: str, query: str | None, limit: int) -> list[dict]:
        """Chunks of a session: those matching ``query`` (FTS5, best first), then the newest."""
        columns = "c.id, c.item_id, c.seq, c.content, c.tokens, c.created, m.kind, m.title, m.trusted"
        found: list[dict] = []
        match = fts_query(query or "")
        if match:
            found = [
                dict(r)
                for r in self._read(
                    f"SELECT {columns}, bm25(memory_fts) AS score FROM memory_fts "
                    "JOIN memory_chunks c ON c.id = memory_fts.rowid JOIN memory_items m ON m.id = c.item_id "
                    "WHERE memory_fts MATCH ? AND c.session_id = ? ORDER BY score, c.id DESC LIMIT ?",
                    (match, sid, limit),
                )
            ]
        seen = {r["id"] for r in found}
        newest = [
            dict(r)
            for r in self._read(
                f"SELECT {columns}, NULL AS score FROM memory_chunks c JOIN memory_items m ON m.id = c.item_id "
                "WHERE c.session_id = ? ORDER BY c.id DESC LIMIT ?",
                (sid, limit),
            )
        ]
        return found + [r for r in newest if r["id"] not in seen]

    # -- feedback ----------------------------------------------------------------------------------
    def add_feedback(self, kind: str, session_id: str | None, payload: dict) -> int:
        return self._write(
            lambda db: int(
                db.execute(
                    "INSERT INTO feedback (kind, session_id, payload, created) VALUES (?, ?, ?, ?)",
                    (kind, session_id, json.dumps(payload, ensure_ascii=False), time.time()),
                ).lastrowid
            )
        )

    def feedback(self, kind: str | None = None) -> list[dict]:
        rows = self._read(
            "SELECT * FROM feedback" + (" WHERE kind = ?" if kind else "") + " ORDER BY id", (kind,) if kind else ()
        )
        return [{**dict(r), "payload": json.loads(r["payload"])} for r in rows]

    # -- learning intake ---------------------------------------------------------------------------
    def add_intake(self, records: Sequence[dict]) -> list[str]:
        """Store screened records in one transaction; returns their ids."""

        def write(db: sqlite3.Connection) -> list[str]:
            now, ids = time.time(), []
            for r in records:
                rid = uuid.uuid4().hex
                db.execute(
                    "INSERT INTO intake (id, status, domain, risk, record, redactions, source, created, consent, "
                    "submitted_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        rid,
                        r["status"],
                        r["domain"],
                        r["risk"],
                        json.dumps(r["record"], ensure_ascii=False),
                        json.dumps(r["redactions"]),
                        r.get("source"),
                        now,
                        int(r["consent"]),
                        r.get("submitted_by"),
                    ),
                )
                ids.append(rid)
            return ids

        return self._write(write)

    def get_intake(self, rid: str) -> dict | None:
        rows = self._read("SELECT * FROM intake WHERE id = ?", (rid,))
        return _intake_row(rows[0]) if rows else None

    def decide_intake(
        self,
        ids: Sequence[str],
        approve: bool,
        reviewer: str,
        note: str | None,
        allow_high_risk: bool,
        decided_by: str = "local",
    ) -> list[dict]:
        """Approve or reject records; a high-risk (quarantined) record is approved only with
        ``allow_high_risk``, and no record by the key that submitted it (``decided_by`` is the
        reviewer's key id, or ``local`` for ``siger serving review``). One outcome per id."""

        def write(db: sqlite3.Connection) -> list[dict]:
            out, now = [], time.time()
            for rid in ids:
                row = db.execute("SELECT status, risk, submitted_by FROM intake WHERE id = ?", (rid,)).fetchone()
                if row is None:
                    out.append({"id": rid, "ok": False, "code": "unknown_record"})
                    continue
                if approve and row["submitted_by"] is not None and row["submitted_by"] == decided_by:
                    out.append({"id": rid, "ok": False, "code": "self_approval", "status": row["status"]})
                    continue
                if approve and row["risk"] == "high" and not allow_high_risk:
                    out.append(
                        {"id": rid, "ok": False, "code": "high_risk_needs_acknowledgement", "status": row["status"]}
                    )
                    continue
                status = "approved" if approve else "rejected"
                db.execute(
                    "UPDATE intake SET status = ?, decided = ?, reviewer = ?, note = ?, decided_by = ? WHERE id = ?",
                    (status, now, reviewer, note, decided_by, rid),
                )
                out.append({"id": rid, "ok": True, "status": status})
            return out

        return self._write(write)

    def intake_stats(self) -> dict:
        stats: dict[str, Any] = {
            "total": 0,
            "by_status": dict.fromkeys(INTAKE_STATUSES, 0),
            "by_domain": {},
            "high_risk": 0,
            "redactions": {},
        }
        for row in self._read("SELECT status, domain, risk, redactions FROM intake"):
            stats["total"] += 1
            stats["by_status"][row["status"]] = stats["by_status"].get(row["status"], 0) + 1
            stats["by_domain"][row["domain"]] = stats["by_domain"].get(row["domain"], 0) + 1
            stats["high_risk"] += row["risk"] == "high"
            for kind, count in json.loads(row["redactions"]).items():
                stats["redactions"][kind] = stats["redactions"].get(kind, 0) + count
        return stats

    def intake_ids(self) -> set[str]:
        return {r["id"] for r in self._read("SELECT id FROM intake")}

    def pending_intake(self) -> list[dict]:
        """Records waiting for a decision (candidate and quarantine), oldest first."""
        rows = self._read("SELECT * FROM intake WHERE status IN ('candidate', 'quarantine') ORDER BY created, rowid")
        return [_intake_row(r) for r in rows]

    def approved_intake(self) -> Iterator[dict]:
        for row in self._read("SELECT * FROM intake WHERE status = 'approved' ORDER BY rowid"):
            yield _intake_row(row)


def _intake_row(row: sqlite3.Row) -> dict:
    d = dict(row)
    d["record"], d["redactions"], d["consent"] = (
        json.loads(d["record"]),
        json.loads(d["redactions"]),
        bool(d["consent"]),
    )
    return d


def _statements(script: str) -> list[str]:
    """Split a migration into statements (triggers contain ';' inside BEGIN ... END)."""
    out, current = [], ""
    for line in script.strip().splitlines():
        current += line + "\n"
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    if current.strip():
        out.append(current.strip())
    return out


def fts_query(text: str) -> str:
    """An FTS5 query matching any word of ``text`` (each quoted: user text is never FTS syntax)."""
    import re

    words = [w for w in re.findall(r"\w+", text.lower()) if len(w) > 1][:32]
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in dict.fromkeys(words))
