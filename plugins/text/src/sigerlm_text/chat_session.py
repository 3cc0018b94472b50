"""Chat sessions: a system prompt, the history, a token budget, and commands plugins add.

``PromptBuilder`` renders the conversation with the chat template and opens the assistant's
turn; ``ChatSession`` keeps the history within ``max_context_tokens`` by dropping the oldest
turns (the system prompt stays). Plugins add chat commands (``/lo-id`` ...) through the
``register_chat_commands`` hook this plugin declares.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sigerlm_text.chat import ROLES, encode_content
from sigerlm_text.generation import GenerationConfig, Generator


class PromptBuilder:
    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.end = tokenizer.token_id("<|end_turn|>")

    def build(self, messages: list[dict[str, str]], open_assistant: bool = True) -> list[int]:
        ids: list[int] = []
        for m in messages:
            ids += (
                [self.tokenizer.token_id(ROLES[m["role"]])] + encode_content(self.tokenizer, m["content"]) + [self.end]
            )
        if open_assistant:
            ids.append(self.tokenizer.token_id(ROLES["assistant"]))
        return ids


@dataclass
class ChatSession:
    generator: Generator
    system: str | None = None
    config: GenerationConfig = field(default_factory=GenerationConfig)
    max_context_tokens: int = 2048
    history: list[dict[str, str]] = field(default_factory=list)
    dropped_turns: int = 0
    #: ``router(session, message) -> reply | None``: answers plain messages before the model
    #: (plugins' ``route_chat_message``); ``routing`` switches it off and on
    router: Callable[[ChatSession, str], str | None] | None = None
    routing: bool = True

    def __post_init__(self) -> None:
        self.builder = PromptBuilder(self.generator.tokenizer)

    def messages(self) -> list[dict[str, str]]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.history

    def prompt_ids(self) -> list[int]:
        """The rendered conversation, oldest turns dropped until it fits the budget."""
        ids = self.builder.build(self.messages())
        while len(ids) + self.config.max_new_tokens > self.max_context_tokens and len(self.history) > 2:
            self.history = self.history[2:]  # the oldest user/assistant pair; the newest message stays
            self.dropped_turns += 1
            ids = self.builder.build(self.messages())
        return ids

    def stream(self, message: str) -> Iterator[str]:
        if self.router is not None and self.routing:
            reply = self.router(self, message)
            if reply is not None:
                self.history += [{"role": "user", "content": message}, {"role": "assistant", "content": reply}]
                yield reply
                return
        yield from self.model_stream(message)

    def model_stream(self, message: str) -> Iterator[str]:
        """The model's reply, whatever the router would say."""
        self.history.append({"role": "user", "content": message})
        parts: list[str] = []
        for delta in self.generator.stream_ids(self.prompt_ids(), self.config):
            parts.append(delta)
            yield delta
        self.history.append({"role": "assistant", "content": "".join(parts) or " "})

    def send(self, message: str) -> str:
        return "".join(self.stream(message))

    def reset(self) -> None:
        self.history.clear()


Handler = Callable[[ChatSession, str], "str | None"]


def builtin_commands() -> dict[str, tuple[Handler, str]]:
    def reset(session: ChatSession, arg: str) -> str:
        session.reset()
        return "(history cleared)"

    def system(session: ChatSession, arg: str) -> str:
        session.system = arg.strip() or None
        session.reset()
        return f"(system prompt {'set' if session.system else 'removed'}; history cleared)"

    def temp(session: ChatSession, arg: str) -> str:
        session.config = GenerationConfig.build(**{**session.config.model_dump(), "temperature": float(arg)})
        return f"(temperature {session.config.temperature})"

    return {
        "/reset": (reset, "forget the conversation"),
        "/system": (system, "/system TEXT: set the system prompt (and start over)"),
        "/temp": (temp, "/temp VALUE: sampling temperature (0 = greedy)"),
    }


def collect_router(plugin_manager: Any) -> Callable[[ChatSession, str], str | None] | None:
    """The plugins' ``route_chat_message`` as a session's router (None when no plugin has one)."""
    hook = getattr(getattr(plugin_manager, "hook", None), "route_chat_message", None)
    if hook is None or not hook.get_hookimpls():
        return None

    def route(session: ChatSession, message: str) -> str | None:
        return hook(session=session, message=message)

    return route


def collect_commands(plugin_manager: Any) -> dict[str, tuple[Handler, str]]:
    commands = builtin_commands()

    def register(name: str, handler: Handler, help: str = "") -> None:
        commands[name if name.startswith("/") else f"/{name}"] = (handler, help)

    if plugin_manager is not None and hasattr(plugin_manager.hook, "register_chat_commands"):
        plugin_manager.hook.register_chat_commands(register=register)
    return commands
