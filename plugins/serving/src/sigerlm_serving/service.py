"""What the server holds while it runs: the model, its tokenizer, the decode scheduler, the
store and the adapters. An instance is the ``app_state`` every ``register_routes`` hook gets."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sigerlm_serving.errors import ApiError
from sigerlm_serving.settings import ServeSettings

log = logging.getLogger("sigerlm.serving")


def lora_available() -> bool:
    return importlib.util.find_spec("sigerlm_lora") is not None


class AppState:
    """``app_state`` of ``register_routes``: ``model``, ``tokenizer``, ``runtime``, ``scheduler``,
    ``store``, ``adapters`` (names), ``data_dir``, ``settings``, ``plugin_manager`` and
    ``generate(prompt, **sampling) -> str``."""

    def __init__(self, settings: ServeSettings, plugin_manager: Any = None, model: Any = None):
        from sigerlm.errors import SigerError
        from sigerlm.paths import data_dir
        from sigerlm_serving.scheduler import DecodeScheduler
        from sigerlm_serving.store import Store

        self.settings = settings
        self.plugin_manager = plugin_manager
        self.started = time.time()
        from sigerlm_text.generation import make_runtime

        if model is None:
            from sigerlm_text.model import load_text_model

            model = load_text_model(settings.model_dir, components=plugin_manager)
        if getattr(model.adapter, "tokenizer", None) is None:
            raise ValueError("the model folder has no tokenizer: the server needs one")
        self.model, self.tokenizer = model, model.adapter.tokenizer
        self.identity = model.identity
        self.runtime = make_runtime(model, settings.runtime, settings.threads, plugin_manager)
        self.adapter_paths: dict[str, str] = {}
        self._load_adapters(settings.adapters)
        self.scheduler = DecodeScheduler(
            self.runtime,
            self.tokenizer,
            settings.max_batch,
            set_adapter=self._set_adapter if self.adapter_paths else None,
        )
        self.store = Store(settings.db)
        try:
            self.data_dir: Path | None = data_dir()
        except SigerError:
            self.data_dir = None
        self._streams: Counter = Counter()
        self._streams_lock = threading.Lock()

    # -- adapters ----------------------------------------------------------------------------------
    @property
    def adapters(self) -> list[str]:
        return sorted(self.adapter_paths)

    def _load_adapters(self, adapters: dict[str, str]) -> None:
        if not adapters:
            return
        if not lora_available():
            raise ValueError("--adapter needs the sigerlm-lora plugin: pip install sigerlm-lora")
        from sigerlm_lora import load_adapter, set_adapter

        for name, path in adapters.items():
            loaded = load_adapter(self.model, path, name=name, activate=False)
            self.adapter_paths[loaded or name] = str(path)
            log.info("loaded adapter %s", loaded or name)
        set_adapter(self.model, None)  # the scheduler switches per batch; it starts on the base

    def _set_adapter(self, name: str | None) -> None:
        from sigerlm_lora import set_adapter

        set_adapter(self.model, name)

    def check_adapter(self, name: str | None) -> str | None:
        if name is not None and name not in self.adapter_paths:
            known = ", ".join(self.adapters) or "none are loaded"
            raise ApiError(422, "unknown_adapter", f"unknown adapter {name!r} ({known})")
        return name

    # -- generation --------------------------------------------------------------------------------
    def config(self, **sampling: Any) -> Any:
        """A ``GenerationConfig`` within the server's limits (422 otherwise)."""
        from sigerlm_text.generation import GenerationConfig, GenerationError

        sampling = {k: v for k, v in sampling.items() if v is not None}
        sampling.setdefault("max_new_tokens", self.settings.default_max_new_tokens)
        if sampling["max_new_tokens"] > self.settings.max_new_tokens:
            raise ApiError(
                422,
                "max_new_tokens_too_large",
                f"max_new_tokens is {sampling['max_new_tokens']}; this server allows at most "
                f"{self.settings.max_new_tokens}",
            )
        try:
            return GenerationConfig.build(**sampling)
        except GenerationError as exc:
            raise ApiError(422, "invalid_sampling", str(exc)) from None

    def encode(self, prompt: str) -> list[int]:
        ids = self.tokenizer.encode(prompt)
        self.check_prompt(ids)
        return ids

    def check_prompt(self, ids: list[int]) -> None:
        if not ids:
            raise ApiError(422, "empty_prompt", "the prompt has no tokens")
        if len(ids) > self.settings.max_prompt_tokens:
            raise ApiError(
                422,
                "prompt_too_long",
                f"the prompt has {len(ids)} tokens; this server allows at most {self.settings.max_prompt_tokens}",
            )

    def generate(self, prompt: str, adapter: str | None = None, **sampling: Any) -> str:
        """Text continuing ``prompt`` (blocking; call from a worker thread, e.g. a sync route).
        ``sampling``: ``max_new_tokens``, ``temperature``, ``top_k``, ``top_p``,
        ``repetition_penalty``, ``stop``, ``seed``, ``hide_thought``. It joins the shared decode
        batch like every other request."""
        return self.complete(self.encode(prompt), self.config(**sampling), self.check_adapter(adapter)).text

    def complete(self, ids: list[int], config: Any, adapter: str | None = None) -> Any:
        return self.scheduler.run(ids, config, adapter)

    # -- limits ------------------------------------------------------------------------------------
    @staticmethod
    def request_key(request: Any) -> str:
        """Whom a request counts against: its API key's id, or its client address without keys."""
        return getattr(request.state, "siger_key", "anonymous")

    def request_slot(self, request: Any) -> Any:
        """``with app_state.request_slot(request): ...``: count work (a generation, a translation)
        against the caller's limit of ``max_streams_per_key`` at once (429 past it)."""
        return self.stream_slot(self.request_key(request))

    @contextmanager
    def stream_slot(self, key: str):
        """Count a running generation against its key; 429 past ``max_streams_per_key``."""
        with self._streams_lock:
            if self._streams[key] >= self.settings.max_streams_per_key:
                raise ApiError(
                    429,
                    "too_many_streams",
                    f"at most {self.settings.max_streams_per_key} "
                    "concurrent generations per API key; wait for one to finish",
                )
            self._streams[key] += 1
        try:
            yield
        finally:
            with self._streams_lock:
                self._streams[key] -= 1
                if self._streams[key] <= 0:
                    del self._streams[key]

    def status(self) -> dict[str, Any]:
        from importlib import metadata

        plugins = {}
        if self.plugin_manager is not None:
            for name, record in sorted(self.plugin_manager.records.items()):
                version = None
                if record.distribution:
                    try:
                        version = metadata.version(record.distribution)
                    except metadata.PackageNotFoundError:
                        version = None
                plugins[name] = {"distribution": record.distribution, "version": version, "loaded": record.loaded}
        params = sum(p.numel() for p in self.model.parameters())
        s = self.settings
        return {
            "model": self.identity,
            "parameters": params,
            "uptime_s": round(time.time() - self.started, 3),
            "runtime": {"name": self.runtime.name, "threads": _threads(), "max_batch": s.max_batch},
            "adapters": self.adapters,
            "lora_available": lora_available(),
            "plugins": plugins,
            "scheduler": dict(self.scheduler.stats),
            "schema_version": self.store.schema_version,
            "limits": {
                "max_body_bytes": s.max_body_bytes,
                "max_prompt_tokens": s.max_prompt_tokens,
                "max_new_tokens": s.max_new_tokens,
                "max_streams_per_key": s.max_streams_per_key,
                "max_context_tokens": s.max_context_tokens,
                "body_timeout_s": s.body_timeout_s,
            },
            "auth": bool(s.api_keys),
            "reviewers": bool(s.reviewer_keys),
        }

    def close(self) -> None:
        self.scheduler.close()
        self.store.close()


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def key_id(key: str) -> str:
    """A log- and metrics-safe name for an API key."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]
