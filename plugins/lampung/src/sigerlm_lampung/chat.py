"""Chat commands for ``siger chat`` (through sigerlm-text's ``register_chat_commands`` hook).

- ``/lo-id TEXT``, ``/id-lo TEXT``, ``/lo-en TEXT``, ``/en-lo TEXT``: translate, with stage and confidence;
- ``/reason TEXT``: a word-by-word gloss with the source of every reading;
- ``/chat TEXT``: send TEXT to the model as an ordinary message;
- ``/auto TEXT``: route TEXT (language + intent) and answer it: a translation, or the model.

The translator and router are built on first use and shared (``service``). The model
fallback for low-confidence translations uses the chat session's own generator.
"""

from __future__ import annotations

from typing import Any

COMMANDS = {
    "/lo-id": ("abl", "ind", "/lo-id TEXT: Lampung O -> Indonesian"),
    "/id-lo": ("ind", "abl", "/id-lo TEXT: Indonesian -> Lampung O"),
    "/lo-en": ("abl", "eng", "/lo-en TEXT: Lampung O -> English"),
    "/en-lo": ("eng", "abl", "/en-lo TEXT: English -> Lampung O"),
}
INTENT_DIRECTIONS = {
    "lampung_to_id": ("abl", "ind"),
    "id_to_lampung": ("ind", "abl"),
    "lampung_to_en": ("abl", "eng"),
    "en_to_lampung": ("eng", "abl"),
}


def _session_generate(session: Any) -> Any:
    generator = getattr(session, "generator", None)
    if generator is None or not hasattr(generator, "stream_ids"):
        return None
    from sigerlm_lampung.service import generator_generate

    return generator_generate(generator)


def translate_reply(session: Any, text: str, src: str, tgt: str) -> str:
    from sigerlm_lampung.service import get_translator

    if not text.strip():
        return f"usage: give the text to translate ({src} -> {tgt})"
    result = get_translator(generate=_session_generate(session)).translate(text, src, tgt)
    note = f" (unknown: {', '.join(result.unknown)})" if result.unknown else ""
    return f"{result.text}\n[{result.stage}, confidence {result.confidence:.2f}]{note}"


def make_translate(src: str, tgt: str) -> Any:
    def handler(session: Any, arg: str) -> str:
        return translate_reply(session, arg, src, tgt)

    return handler


def reason(session: Any, arg: str) -> str:
    from sigerlm_lampung.cli import format_gloss
    from sigerlm_lampung.service import get_router, get_translator

    if not arg.strip():
        return "usage: /reason TEXT (a Lampung, Indonesian or English sentence)"
    lang = get_router().language_id.predict(arg)[0]
    src, tgt = (lang, "abl") if lang in ("ind", "eng") else ("abl", "ind")
    translator = get_translator()
    result = translator.translate(arg, src, tgt, allow_model=False)
    return (f"{format_gloss(translator.gloss(arg, src, tgt))}\n=> {result.text} "
            f"[{result.stage}, confidence {result.confidence:.2f}]")


NO_MODEL = "(general chat needs a model: start with siger chat MODEL_DIR or siger lampung chat MODEL_DIR)"


def chat(session: Any, arg: str) -> str | None:
    if not arg.strip():
        return "usage: /chat MESSAGE"
    if session is None:
        return NO_MODEL
    return session.send(arg)


def auto(session: Any, arg: str) -> str | None:
    """Route a message: a translation request or Lampung input is translated, the rest goes to the model."""
    from sigerlm_lampung.service import get_router

    if not arg.strip():
        return "usage: /auto MESSAGE"
    route = get_router().route(arg)
    if route.intent in INTENT_DIRECTIONS:
        src, tgt = INTENT_DIRECTIONS[route.intent]
        return f"({route.intent}) " + translate_reply(session, route.text, src, tgt)
    return chat(session, arg)


def register_all(register: Any) -> None:
    for name, (src, tgt, text) in COMMANDS.items():
        register(name, make_translate(src, tgt), text)
    register("/reason", reason, "/reason TEXT: word-by-word gloss with sources, and the translation")
    register("/chat", chat, "/chat TEXT: talk to the model (no translation)")
    register("/auto", auto, "/auto TEXT: route by language and intent (translate or chat)")
