"""HTTP routes for sigerlm-serving (``register_routes`` hook): ``POST /v1/translate`` and
``POST /v1/lampung/gloss``.

The translator is built on the first request and cached. ``app_state`` may offer
``data_dir`` (a path or None), ``model``, ``generate(prompt, **sampling) -> str`` (it answers
low-confidence translations: the model fallback) and ``request_slot(request)`` (the server's
per-key limit of concurrent work). Building, translating and generating run in the thread pool,
never on the event loop. A request holds at most ``MAX_TOTAL_CHARS`` characters; its texts are
translated one at a time, and a client that disconnects stops the rest.

(No ``from __future__ import annotations`` here: FastAPI reads the request models from the
handlers' annotations, which must be real classes, not strings.)
"""

import contextlib
import threading
from typing import Any, Literal

MAX_TEXTS = 64
MAX_CHARS = 4000
#: all texts of one request together (the work of a request grows with its characters)
MAX_TOTAL_CHARS = 8000


def add_routes(router: Any, app_state: Any) -> None:
    from fastapi import HTTPException, Request
    from pydantic import BaseModel, ConfigDict, Field
    from starlette.concurrency import run_in_threadpool

    from sigerlm.errors import SigerError
    from sigerlm_lampung.translator import lang_code

    class TranslateRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)

        texts: list[str] = Field(min_length=1, max_length=MAX_TEXTS, description="Texts to translate.")
        direction: Literal["abl-ind", "ind-abl", "abl-eng", "eng-abl", "ind-eng", "eng-ind"] | None = Field(
            None, description="source-target in one field; overrides source and target when given."
        )
        source: str = Field("abl", description="abl (Lampung O), ind or eng (aliases lo, id, en).")
        target: str = Field("ind")
        use_model: bool = Field(
            True, description="Let the model answer low-confidence texts (when the server has one)."
        )
        adapter: str | None = Field(None, description="A LoRA adapter the server loaded, for the model's answers.")

    class GlossRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)

        text: str = Field(min_length=1, max_length=MAX_CHARS)
        source: str = "abl"
        target: str = "ind"

    lock = threading.Lock()
    cache: dict[str, Any] = {}

    def translator() -> Any:
        with lock:
            if "translator" not in cache:
                from sigerlm_lampung.service import get_translator

                cache["translator"] = get_translator(getattr(app_state, "data_dir", None))
            return cache["translator"]

    def with_model(base: Any, adapter: str | None) -> Any:
        """The shared tables with the server's model as the fallback (``adapter`` on it)."""
        from sigerlm_lampung.translator import Translator

        generate = getattr(app_state, "generate", None)
        if not callable(generate) or getattr(app_state, "model", None) is None:
            if adapter is not None:
                raise HTTPException(status_code=422, detail="this server has no model to put an adapter on")
            return base
        if adapter is not None and adapter not in (getattr(app_state, "adapters", None) or []):
            raise HTTPException(status_code=422, detail=f"adapter '{adapter}' is not loaded on this server")
        sampling = {"max_new_tokens": 64, "temperature": 0.0, "stop": ["\n"]}
        if adapter is not None:
            sampling["adapter"] = adapter

        def fallback(prompt: str) -> str:
            return generate(prompt, **sampling)

        translator = Translator(base.systems, base.lms, fallback, base.fallback_below, extend=base.extend)
        translator._fuzzy_keys = base._fuzzy_keys  # shared, like the tables
        return translator

    def languages(source: str, target: str) -> tuple[str, str]:
        try:
            src, tgt = lang_code(source), lang_code(target)
        except SigerError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        if src == tgt:
            raise HTTPException(status_code=422, detail=f"source and target are both {src}")
        return src, tgt

    def work_slot(request: Request) -> Any:
        """The server's per-key limit on concurrent work (429 past it), when it has one."""
        slot = getattr(app_state, "request_slot", None)
        return slot(request) if callable(slot) else contextlib.nullcontext()

    @router.post("/v1/translate")
    async def translate(body: TranslateRequest, request: Request) -> dict[str, Any]:
        src, tgt = languages(*(body.direction.split("-") if body.direction else (body.source, body.target)))
        too_long = [i for i, t in enumerate(body.texts) if len(t) > MAX_CHARS]
        if too_long:
            raise HTTPException(status_code=422, detail=f"texts {too_long[:5]} are longer than {MAX_CHARS} characters")
        total = sum(len(t) for t in body.texts)
        if total > MAX_TOTAL_CHARS:
            raise HTTPException(
                status_code=422,
                detail=f"the texts hold {total} characters; one request may hold at most {MAX_TOTAL_CHARS}",
            )
        with work_slot(request):
            try:
                t = await run_in_threadpool(
                    lambda: with_model(translator(), body.adapter) if body.use_model else translator()
                )
                results = []
                for text in body.texts:  # one at a time: a client that left stops the rest
                    if await request.is_disconnected():
                        raise HTTPException(status_code=499, detail="the client closed the request")
                    results.append(await run_in_threadpool(t.translate, text, src, tgt, body.use_model))
            except SigerError as exc:
                raise HTTPException(status_code=503, detail=str(exc)) from exc
        return {
            "source": src,
            "target": tgt,
            "translations": [
                {"text": r.text, "stage": r.stage, "confidence": r.confidence, "unknown": r.unknown} for r in results
            ],
        }

    @router.post("/v1/lampung/gloss")
    def gloss(body: GlossRequest, request: Request) -> dict[str, Any]:
        src, tgt = languages(body.source, body.target)
        with work_slot(request):
            try:
                t = translator()
                words = t.gloss(body.text, src, tgt)
                result = t.translate(body.text, src, tgt, allow_model=False)
            except SigerError as exc:
                raise HTTPException(status_code=503, detail=str(exc)) from exc
        return {
            "source": src,
            "target": tgt,
            "words": words,
            "translation": {"text": result.text, "stage": result.stage, "confidence": result.confidence},
        }
