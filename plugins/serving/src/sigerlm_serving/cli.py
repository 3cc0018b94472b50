"""``siger serve MODEL_DIR`` and ``siger serving export-intake`` (typer; heavy imports inside)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from sigerlm_serving.settings import DEFAULT_DB

serving_app = typer.Typer(help="The HTTP server's data: learning intake export.", no_args_is_help=True)


def serve_command(
    model_dir: Annotated[Path, typer.Argument(help="A model folder (config.json, model.safetensors, tokenizer).")],
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8000,
    workers: Annotated[int, typer.Option("--workers", help="Server processes (each loads the model).")] = 1,
    db: Annotated[Path, typer.Option("--db", help="SQLite file for sessions, memory, feedback, intake.")] = Path(DEFAULT_DB),
    adapter: Annotated[Optional[list[str]], typer.Option("--adapter", help="NAME=PATH of a LoRA adapter; repeatable "
                                                          "(needs sigerlm-lora).")] = None,
    api_key: Annotated[Optional[list[str]], typer.Option("--api-key", help="An accepted API key; repeatable. Also "
                                                          "SIGER_API_KEYS (comma list) or SIGER_API_KEYS_FILE.")] = None,
    cors_origin: Annotated[Optional[list[str]], typer.Option("--cors-origin", help="An origin allowed by CORS; "
                                                              "repeatable.")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="torch threads per worker.")] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="The most a request may ask for.")] = 512,
    max_prompt_tokens: Annotated[int, typer.Option("--max-prompt-tokens")] = 2048,
    max_body_bytes: Annotated[int, typer.Option("--max-body-bytes")] = 1_000_000,
    max_streams_per_key: Annotated[int, typer.Option("--max-streams-per-key")] = 8,
    max_batch: Annotated[int, typer.Option("--max-batch", help="Rows decoded together.")] = 32,
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
) -> None:
    """Serve a model over HTTP: the /v1 API, OpenAI-compatible endpoints and a web page at /."""
    import logging
    import os

    import uvicorn
    from pydantic import ValidationError

    from sigerlm_serving.settings import ServeSettings, keys_from_env

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
            raise typer.BadParameter("adapters need the sigerlm-lora plugin: pip install sigerlm-lora",
                                     param_hint="--adapter")
    try:
        settings = ServeSettings(
            model_dir=str(model_dir.resolve()), db=str(db.resolve()), host=host, port=port, workers=workers,
            api_keys=list(api_key or []) + keys_from_env(), cors_origins=list(cors_origin or []), adapters=adapters,
            threads=threads, max_new_tokens=max_new_tokens, max_prompt_tokens=max_prompt_tokens,
            max_body_bytes=max_body_bytes, max_streams_per_key=max_streams_per_key, max_batch=max_batch,
            default_max_new_tokens=min(128, max_new_tokens), log_level=log_level)
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from None
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if host not in ("127.0.0.1", "localhost", "::1") and not settings.api_keys:
        typer.echo(f"warning: listening on {host} without API keys: anyone who reaches it can use it", err=True)
    os.environ["SIGER_SERVE_SETTINGS"] = settings.model_dump_json()
    uvicorn.run("sigerlm_serving.app:create_app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, proxy_headers=False, server_header=False)


@serving_app.command("export-intake")
def export_intake(
    out: Annotated[Path, typer.Option("--out", help="The instruction JSONL file to write.")],
    db: Annotated[Path, typer.Option("--db", help="The server's SQLite file.")] = Path(DEFAULT_DB),
) -> None:
    """Write approved learning-intake records as instruction JSONL (instruction, input, output,
    system), the format of sigerlm-text's instruction_jsonl dataset."""
    import json

    from sigerlm.io import atomic_write

    from sigerlm_serving.store import Store

    if not db.is_file():
        raise typer.BadParameter(f"{db} does not exist", param_hint="--db")
    store = Store(db)
    lines = []
    for row in store.approved_intake():
        record = {k: row["record"][k] for k in ("instruction", "input", "output", "system") if row["record"].get(k)}
        lines.append(json.dumps(record, ensure_ascii=False))
    store.close()
    atomic_write(out, "".join(line + "\n" for line in lines))
    typer.echo(f"wrote {len(lines)} approved records to {out}")
