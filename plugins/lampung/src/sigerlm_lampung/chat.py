"""Chat commands for ``siger chat`` (through sigerlm-text's ``register_chat_commands`` hook).

- ``/lo-id TEXT``, ``/id-lo TEXT``, ``/lo-en TEXT``, ``/en-lo TEXT``: translate, with stage and confidence;
- ``/reason TEXT``: a word-by-word gloss with the source of every reading;
- ``/chat TEXT``: send TEXT to the model as an ordinary message (never translated);
- ``/auto on`` / ``/auto off``: switch the automatic routing of plain messages (on by default:
  sigerlm-text's ``route_chat_message`` hook, ``route_message`` here, translates Lampung input
  and translation requests and leaves the rest to the model); ``/auto TEXT``: route TEXT once.

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
    from sigerlm_lampung.service import get_router, get_translator
    from sigerlm_lampung.translator import format_gloss

    if not arg.strip():
        return "usage: /reason TEXT (a Lampung, Indonesian or English sentence)"
    lang = get_router().language_id.predict(arg)[0]
    src, tgt = (lang, "abl") if lang in ("ind", "eng") else ("abl", "ind")
    translator = get_translator()
    result = translator.translate(arg, src, tgt, allow_model=False)
    return (
        f"{format_gloss(translator.gloss(arg, src, tgt))}\n=> {result.text} "
        f"[{result.stage}, confidence {result.confidence:.2f}]"
    )


NO_MODEL = "(general chat needs a model: start with siger chat MODEL_DIR or siger lampung chat MODEL_DIR)"


def chat(session: Any, arg: str) -> str | None:
    if not arg.strip():
        return "usage: /chat MESSAGE"
    if session is None:
        return NO_MODEL
    model_stream = getattr(session, "model_stream", None)  # past the router: the model itself
    return "".join(model_stream(arg)) if model_stream is not None else session.send(arg)


def routed_reply(session: Any, message: str) -> str | None:
    """A translation when the router finds a translation request or Lampung input, else None."""
    from sigerlm_lampung.service import get_router

    route = get_router().route(message)
    if route.intent not in INTENT_DIRECTIONS:
        return None
    src, tgt = INTENT_DIRECTIONS[route.intent]
    return f"({route.intent}) " + translate_reply(session, route.text, src, tgt)


def auto(session: Any, arg: str) -> str | None:
    """``/auto on``: route every following plain message (a translation request or Lampung input
    is translated, the rest goes to the model); ``/auto off``: back to the model alone;
    ``/auto MESSAGE``: route one message."""
    command = arg.strip().lower()
    if not command:
        return "usage: /auto on | /auto off | /auto MESSAGE"
    if command in ("on", "off"):
        if session is None or not hasattr(session, "routing"):
            return "(automatic routing needs a chat session)"
        session.routing = command == "on"
        if command == "off":
            return "(automatic routing off: messages go to the model)"
        return "(automatic routing on: Lampung text and translation requests are translated)"
    return routed_reply(session, arg) or chat(session, arg)


def route_message(session: Any, message: str) -> str | None:
    """sigerlm-text's ``route_chat_message``: a translation for Lampung input and translation
    requests; None (the model answers) for everything else."""
    return routed_reply(session, message)


def register_all(register: Any) -> None:
    for name, (src, tgt, text) in COMMANDS.items():
        register(name, make_translate(src, tgt), text)
    register("/reason", reason, "/reason TEXT: word-by-word gloss with sources, and the translation")
    register("/chat", chat, "/chat TEXT: talk to the model (no translation)")
    register(
        "/auto", auto, "/auto on|off: translate Lampung text and translation requests automatically; /auto TEXT: once"
    )
