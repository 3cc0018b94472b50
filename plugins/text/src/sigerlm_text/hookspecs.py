"""Hooks that sigerlm-text adds to the plugin contract (through ``add_hooks``). Light: no torch."""

from __future__ import annotations

from typing import Any

from sigerlm import hookspec


class ChatSpecs:
    @hookspec
    def register_chat_commands(self, register: Any) -> None:
        """Add chat commands: ``register("/name", handler, help)``; ``handler(session, argument)``
        returns the text to show (or None). Added by sigerlm-text.

        .. versionadded:: 0.1
        """
