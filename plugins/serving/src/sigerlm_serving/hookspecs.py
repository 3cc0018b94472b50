"""Hooks that sigerlm-serving adds to the plugin contract (through ``add_hooks``).

Plugins that implement them mark the implementation ``@hookimpl(optionalhook=True)``, so they
still load where sigerlm-serving is not installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sigerlm import hookspec

if TYPE_CHECKING:
    from fastapi import APIRouter


class ServingSpecs:
    @hookspec
    def register_routes(self, router: APIRouter, app_state: Any) -> None:
        """Add HTTP routes to the server.

        ``router`` is a ``fastapi.APIRouter`` mounted at the server's root; every route on it
        is behind the server's API-key check (when keys are configured) and its errors use the
        server's ``{"error": {"code", "message", "type"}}`` shape (raise
        ``fastapi.HTTPException`` or ``sigerlm_serving.errors.ApiError(status, code, message)``).
        Called once when the app is built; sigerlm-serving adds its own ``/v1`` API this way.
        Import fastapi and heavy modules inside this function, not at module top.

        ``app_state`` (``sigerlm_serving.service.AppState``) holds:

        - ``model``: the loaded ``sigerlm_text.model.SigerLM`` (eval mode); ``identity`` its name;
        - ``tokenizer``: the model's tokenizer;
        - ``data_dir``: ``sigerlm.paths.data_dir()`` or ``None`` when no data folder exists;
        - ``generate(prompt: str, adapter=None, **sampling) -> str``: blocking text generation
          through the server's shared decode batch; call it from a synchronous (``def``) route,
          which FastAPI runs in a worker thread, never from ``async def``. ``sampling``:
          ``max_new_tokens``, ``temperature``, ``top_k``, ``top_p``, ``repetition_penalty``,
          ``stop``, ``seed``, ``hide_thought``; the server's limits apply (422 past them);
        - ``adapters``: names of the loaded LoRA adapters (``[]`` without sigerlm-lora);
        - ``store``: the server's SQLite store (``sigerlm_serving.store.Store``);
        - ``runtime``, ``scheduler``, ``settings`` and ``plugin_manager`` for advanced use.

        .. versionadded:: 0.1
        """
