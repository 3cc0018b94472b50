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

    @hookspec(firstresult=True)
    def route_chat_message(self, session: Any, message: str) -> str | None:
        """Answer a plain (non-command) chat message instead of the model: return the reply,
        which joins the conversation's history, or None to leave the message to the next
        plugin and finally the model. The first non-None reply wins. ``session.routing`` is
        False while the user has switched routing off. Added by sigerlm-text.

        .. versionadded:: 0.1
        """
