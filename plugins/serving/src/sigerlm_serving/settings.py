"""Server settings (torch-free): what ``siger serve`` passes to the app, with its limits."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sigerlm.errors import SigerError

DEFAULT_DB = "siger-serving.sqlite3"


class KeyConfigError(SigerError):
    """API or reviewer keys that were given but hold no usable key, or a keys file that cannot be read."""


class ServeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_dir: str = Field(description="The model folder to serve.")
    db: str = Field(DEFAULT_DB, description="The SQLite file (sessions, memory, feedback, intake).")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    runtime: str = Field(
        "torch", description="The registered runtime that decodes (torch; onnxruntime with sigerlm-onnx)."
    )
    api_keys: list[str] = Field(default_factory=list, description="Accepted API keys; empty: no key needed.")
    reviewer_keys: list[str] = Field(
        default_factory=list,
        description="Keys that may approve or reject learning intake (/v1/learning/approval); never API keys too.",
    )
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed by CORS; empty: none.")
    adapters: dict[str, str] = Field(default_factory=dict, description="LoRA adapters: name -> path.")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads (default: torch's).")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Larger request bodies get 413.")
    body_timeout_s: float = Field(30.0, gt=0, le=3600, description="A request body must arrive within this (408).")
    max_prompt_tokens: int = Field(2048, ge=1, description="Longer prompts get 422.")
    max_new_tokens: int = Field(512, ge=1, description="The largest max_new_tokens a request may ask for.")
    default_max_new_tokens: int = Field(128, ge=1)
    max_context_tokens: int = Field(2048, ge=16, description="Chat: the rendered conversation plus the reply.")
    memory_budget_tokens: int = Field(256, ge=0, description="Chat: tokens of memory packed into the prompt.")
    max_streams_per_key: int = Field(
        8, ge=1, description="Concurrent generations (and translations) per API key (or client address)."
    )
    max_batch: int = Field(32, ge=1, description="Rows decoded together.")
    docs: bool = Field(False, description="Serve Swagger UI at /docs (its files come from a CDN).")
    log_level: str = "info"

    @field_validator("api_keys", "reviewer_keys")
    @classmethod
    def _no_empty_keys(cls, keys: list[str]) -> list[str]:
        if any(not k.strip() or k != k.strip() for k in keys):
            raise ValueError("a key is empty or has spaces around it")
        return keys

    @model_validator(mode="after")
    def _roles_apart(self) -> ServeSettings:
        if set(self.api_keys) & set(self.reviewer_keys):
            raise ValueError("a reviewer key cannot also be an API key: give reviewers keys of their own")
        return self


def settings_from_env() -> ServeSettings:
    """The settings ``siger serve`` hands to each uvicorn worker (``SIGER_SERVE_SETTINGS``, JSON)."""
    raw = os.environ.get("SIGER_SERVE_SETTINGS")
    if not raw:
        raise RuntimeError("SIGER_SERVE_SETTINGS is not set: start the server with `siger serve MODEL_DIR`")
    return ServeSettings.model_validate_json(raw)


def keys_from_env(prefix: str = "SIGER_API_KEYS") -> list[str]:
    """Keys from ``$PREFIX`` (comma-separated) and the file ``$PREFIX_FILE`` (one a line, ``#``
    comments). A variable or file that is set but holds no key is an error, never "no keys"."""
    keys: list[str] = []
    raw = os.environ.get(prefix)
    if raw is not None:
        found = [k.strip() for k in raw.split(",") if k.strip()]
        if not found:
            raise KeyConfigError(f"{prefix} is set but holds no key ({raw!r}): set keys or unset it")
        keys += found
    path = os.environ.get(f"{prefix}_FILE")
    if path is not None:
        file = Path(path)
        if not path.strip():
            raise KeyConfigError(f"{prefix}_FILE is set but empty: name a keys file or unset it")
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise KeyConfigError(f"{prefix}_FILE: {file} does not exist") from None
        except IsADirectoryError:
            raise KeyConfigError(f"{prefix}_FILE: {file} is a directory, not a keys file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise KeyConfigError(f"{prefix}_FILE: {file} cannot be read ({exc})") from None
        found = [k.strip() for k in text.splitlines() if k.strip() and not k.strip().startswith("#")]
        if not found:
            raise KeyConfigError(f"{prefix}_FILE: {file} holds no key (one key a line; # starts a comment)")
        keys += found
    return keys
