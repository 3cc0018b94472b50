"""``siger serve MODEL_DIR`` and ``siger serving export-intake`` (typer; heavy imports inside)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sigerlm_serving.settings import DEFAULT_DB

serving_app = typer.Typer(help="The HTTP server's data: learning intake export.", no_args_is_help=True)


def serve_command(
    model_dir: Annotated[Path, typer.Argument(help="A model folder (config.json, model.safetensors, tokenizer).")],
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8000,
    workers: Annotated[int, typer.Option("--workers", help="Server processes (each loads the model).")] = 1,
    db: Annotated[Path, typer.Option("--db", help="SQLite file for sessions, memory, feedback, intake.")] = Path(
        DEFAULT_DB
    ),
    adapter: Annotated[
        list[str] | None,
        typer.Option("--adapter", help="NAME=PATH of a LoRA adapter; repeatable (needs sigerlm-lora)."),
    ] = None,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            "--api-key",
            help="An accepted API key; repeatable. Also SIGER_API_KEYS (comma list) or SIGER_API_KEYS_FILE.",
        ),
    ] = None,
    reviewer_key: Annotated[
        list[str] | None,
        typer.Option(
            "--reviewer-key",
            help="A key that may approve learning intake (never also an API key); repeatable. Also "
            "SIGER_REVIEWER_KEYS (comma list) or SIGER_REVIEWER_KEYS_FILE.",
        ),
    ] = None,
    cors_origin: Annotated[
        list[str] | None, typer.Option("--cors-origin", help="An origin allowed by CORS; repeatable.")
    ] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="torch threads per worker.")] = None,
    runtime: Annotated[str, typer.Option("--runtime", help="A registered runtime (torch, ...).")] = "torch",
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="The most a request may ask for.")] = 512,
    max_prompt_tokens: Annotated[int, typer.Option("--max-prompt-tokens")] = 2048,
    max_body_bytes: Annotated[int, typer.Option("--max-body-bytes")] = 1_000_000,
    body_timeout: Annotated[
        float, typer.Option("--body-timeout", help="Seconds a request body may take to arrive (408 after).")
    ] = 30.0,
    max_streams_per_key: Annotated[int, typer.Option("--max-streams-per-key")] = 8,
    max_batch: Annotated[int, typer.Option("--max-batch", help="Rows decoded together.")] = 32,
    docs: Annotated[
        bool, typer.Option("--docs", help="Serve Swagger UI at /docs (its script and style come from a CDN).")
    ] = False,
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
) -> None:
    """Serve a model over HTTP: the /v1 API, OpenAI-compatible endpoints and a web page at /."""
    import logging
    import os

    import uvicorn
    from pydantic import ValidationError

    from sigerlm.errors import SigerError
    from sigerlm_serving.settings import ServeSettings, keys_from_env
    from sigerlm_serving.store import Store

    if not (model_dir / "config.json").is_file():
        raise typer.BadParameter(f"{model_dir} is not a model folder (no config.json)", param_hint="MODEL_DIR")
    adapters = {}
    for item in adapter or []:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise typer.BadParameter(f"expected NAME=PATH, got {item!r}", param_hint="--adapter")
        adapters[name.strip()] = path.strip()
    if adapters:
        from sigerlm_serving.service import lora_available

        if not lora_available():
            raise typer.BadParameter(
                "adapters need the sigerlm-lora plugin: pip install sigerlm-lora", param_hint="--adapter"
            )
    try:
        settings = ServeSettings(
            model_dir=str(model_dir.resolve()),
            db=str(db.resolve()),
            host=host,
            port=port,
            workers=workers,
            api_keys=list(api_key or []) + keys_from_env("SIGER_API_KEYS"),
            reviewer_keys=list(reviewer_key or []) + keys_from_env("SIGER_REVIEWER_KEYS"),
            cors_origins=list(cors_origin or []),
            adapters=adapters,
            threads=threads,
            runtime=runtime,
            max_new_tokens=max_new_tokens,
            max_prompt_tokens=max_prompt_tokens,
            max_body_bytes=max_body_bytes,
            body_timeout_s=body_timeout,
            max_streams_per_key=max_streams_per_key,
            max_batch=max_batch,
            default_max_new_tokens=min(128, max_new_tokens),
            docs=docs,
            log_level=log_level,
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise SigerError(f"invalid server settings: {problems}") from None
    Store(settings.db).close()  # a directory, a corrupt file or a newer schema: one line naming the file, now
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if host not in ("127.0.0.1", "localhost", "::1") and not settings.api_keys:
        typer.echo(f"warning: listening on {host} without API keys: anyone who reaches it can use it", err=True)
    os.environ["SIGER_SERVE_SETTINGS"] = settings.model_dump_json()
    uvicorn.run(
        "sigerlm_serving.app:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        proxy_headers=False,
        server_header=False,
    )


@serving_app.command("export-intake")
def export_intake(
    out: Annotated[Path, typer.Option("--out", help="The instruction JSONL file to write.")],
    db: Annotated[Path, typer.Option("--db", help="The server's SQLite file.")] = Path(DEFAULT_DB),
    force: Annotated[
        bool, typer.Option("--force", help="Replace --out even when it is a file this command did not write.")
    ] = False,
) -> None:
    """Write approved learning-intake records as instruction JSONL (instruction, input, output,
    system), the format of sigerlm-text's instruction_jsonl dataset. An existing --out is replaced
    only when it is empty or an earlier export (else --force); a folder never is."""
    import json
    import sqlite3

    from sigerlm.io import atomic_write
    from sigerlm_serving.store import Store, StoreError

    if not db.exists():
        raise typer.BadParameter(f"{db} does not exist", param_hint="--db")
    check_export_target(out, force)
    store = Store(db, create=False)
    lines = []
    try:
        for row in store.approved_intake():
            record = {k: row["record"][k] for k in ("instruction", "input", "output", "system") if row["record"].get(k)}
            lines.append(json.dumps(record, ensure_ascii=False))
    except (sqlite3.DatabaseError, ValueError) as exc:
        raise StoreError(f"{db} cannot be read: {exc}") from None
    finally:
        store.close()
    atomic_write(out, "".join(line + "\n" for line in lines))
    typer.echo(f"wrote {len(lines)} approved records to {out}")


EXPORT_FIELDS = frozenset({"instruction", "input", "output", "system"})


def check_export_target(out: Path, force: bool) -> None:
    """Refuse an --out that is a folder, or an existing file that is not an earlier export (without --force)."""
    import json

    from sigerlm.errors import SigerError

    if out.is_dir():
        raise SigerError(f"--out {out} is a folder; name the JSONL file to write")
    if out.exists() and not out.is_file():
        raise SigerError(f"--out {out} is not a regular file")
    if not out.exists() or force or out.stat().st_size == 0:
        return
    try:
        with out.open(encoding="utf-8") as handle:
            earlier = all(
                isinstance(row := json.loads(line), dict) and row and set(row) <= EXPORT_FIELDS
                for line in handle
                if line.strip()
            )
    except (UnicodeDecodeError, ValueError, OSError):
        earlier = False
    if not earlier:
        raise SigerError(
            f"--out {out} exists and is not an earlier export of approved intake; "
            "choose another file or pass --force to replace it"
        )


@serving_app.command("review")
def review(
    db: Annotated[Path, typer.Option("--db", help="The server's SQLite file.")] = Path(DEFAULT_DB),
    approve: Annotated[list[str] | None, typer.Option("--approve", help="A record id to approve; repeatable.")] = None,
    reject: Annotated[list[str] | None, typer.Option("--reject", help="A record id to reject; repeatable.")] = None,
    reviewer: Annotated[str | None, typer.Option("--reviewer", help="Your name, stored with the decision.")] = None,
    note: Annotated[str | None, typer.Option("--note")] = None,
    acknowledge_high_risk: Annotated[
        bool, typer.Option("--acknowledge-high-risk", help="Needed to approve a quarantined (high-risk) record.")
    ] = False,
) -> None:
    """Review learning intake on this machine: without --approve/--reject, list the records that
    wait for a decision (redacted, as stored); with them, decide. Whoever can open the database
    file is a reviewer; over HTTP only reviewer keys are."""
    import json

    from sigerlm.errors import SigerError
    from sigerlm_serving.privacy import redact
    from sigerlm_serving.store import Store

    if not db.exists():
        raise typer.BadParameter(f"{db} does not exist", param_hint="--db")
    store = Store(db, create=False)
    try:
        if not approve and not reject:
            pending = store.pending_intake()
            for row in pending:
                typer.echo(
                    json.dumps(
                        {k: row[k] for k in ("id", "status", "risk", "domain", "redactions", "record", "source")},
                        ensure_ascii=False,
                    )
                )
            typer.echo(f"{len(pending)} records wait for a decision", err=True)
            return
        if not reviewer or not reviewer.strip():
            raise SigerError("--reviewer NAME is needed to decide")
        note = redact(note)[0] if note else None
        results = []
        if approve:
            results += store.decide_intake(approve, True, reviewer.strip(), note, acknowledge_high_risk)
        if reject:
            results += store.decide_intake(reject, False, reviewer.strip(), note, False)
        for r in results:
            typer.echo(json.dumps(r))
        failed = [r for r in results if not r["ok"]]
        if failed:
            raise SigerError(
                f"{len(failed)} of {len(results)} decisions were refused: "
                + ", ".join(f"{r['id']} ({r['code']})" for r in failed[:5])
            )
    finally:
        store.close()
