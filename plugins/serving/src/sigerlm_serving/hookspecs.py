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

        ``router`` is a ``fastapi.APIRouter`` mounted at the server's root; ``app_state`` holds the
        loaded model, its runtime, the adapters and the store. Called once when the app is
        built. Import fastapi and heavy modules inside this function, not at module top.

        .. versionadded:: 0.1
        """
