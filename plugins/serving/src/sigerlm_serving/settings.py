"""Server settings (torch-free): what ``siger serve`` passes to the app, with its limits."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_DB = "siger-serving.sqlite3"


class ServeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_dir: str = Field(description="The model folder to serve.")
    db: str = Field(DEFAULT_DB, description="The SQLite file (sessions, memory, feedback, intake).")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    api_keys: list[str] = Field(default_factory=list, description="Accepted API keys; empty: no key needed.")
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed by CORS; empty: none.")
    adapters: dict[str, str] = Field(default_factory=dict, description="LoRA adapters: name -> path.")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads (default: torch's).")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Larger request bodies get 413.")
    max_prompt_tokens: int = Field(2048, ge=1, description="Longer prompts get 422.")
    max_new_tokens: int = Field(512, ge=1, description="The largest max_new_tokens a request may ask for.")
    default_max_new_tokens: int = Field(128, ge=1)
    max_context_tokens: int = Field(2048, ge=16, description="Chat: the rendered conversation plus the reply.")
    memory_budget_tokens: int = Field(256, ge=0, description="Chat: tokens of memory packed into the prompt.")
    max_streams_per_key: int = Field(8, ge=1, description="Concurrent generations per API key (or client address).")
    max_batch: int = Field(32, ge=1, description="Rows decoded together.")
    log_level: str = "info"


def settings_from_env() -> ServeSettings:
    """The settings ``siger serve`` hands to each uvicorn worker (``SIGER_SERVE_SETTINGS``, JSON)."""
    raw = os.environ.get("SIGER_SERVE_SETTINGS")
    if not raw:
        raise RuntimeError("SIGER_SERVE_SETTINGS is not set: start the server with `siger serve MODEL_DIR`")
    return ServeSettings.model_validate_json(raw)


def keys_from_env() -> list[str]:
    """API keys from ``SIGER_API_KEYS`` (comma-separated) or the file ``SIGER_API_KEYS_FILE`` (one a line)."""
    keys = [k.strip() for k in os.environ.get("SIGER_API_KEYS", "").split(",") if k.strip()]
    path = os.environ.get("SIGER_API_KEYS_FILE")
    if path:
        keys += [k.strip() for k in Path(path).read_text(encoding="utf-8").splitlines() if k.strip() and not k.startswith("#")]
    return keys
