"""HTTP routes for sigerlm-serving (``register_routes`` hook): ``POST /v1/translate`` and
``POST /v1/lampung/gloss``.

The translator is built on the first request and cached. ``app_state`` may offer
``data_dir`` (a path or None), ``model`` and ``generate(prompt, **sampling) -> str``; the
latter answers low-confidence translations (the model fallback). Handlers are plain ``def``:
FastAPI runs them in its thread pool, so building or generating never blocks the event loop.

(No ``from __future__ import annotations`` here: FastAPI reads the request models from the
handlers' annotations, which must be real classes, not strings.)
"""


import threading
from typing import Any, Literal

MAX_TEXTS = 256
MAX_CHARS = 4000


def add_routes(router: Any, app_state: Any) -> None:
    from fastapi import HTTPException
    from pydantic import BaseModel, ConfigDict, Field
    from sigerlm.errors import SigerError

    from sigerlm_lampung.translator import lang_code

    class TranslateRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")

        texts: list[str] = Field(min_length=1, max_length=MAX_TEXTS, description="Texts to translate.")
        direction: Literal["abl-ind", "ind-abl", "abl-eng", "eng-abl", "ind-eng", "eng-ind"] | None = Field(
            None, description="source-target in one field; overrides source and target when given.")
        source: str = Field("abl", description="abl (Lampung O), ind or eng (aliases lo, id, en).")
        target: str = Field("ind")
        use_model: bool = Field(True, description="Let the model answer low-confidence texts (when the server has one).")
        adapter: str | None = Field(None, description="A LoRA adapter the server loaded, for the model's answers.")

    class GlossRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")

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

    @router.post("/v1/translate")
    def translate(request: TranslateRequest) -> dict[str, Any]:
        src, tgt = languages(*(request.direction.split("-") if request.direction else (request.source, request.target)))
        too_long = [i for i, t in enumerate(request.texts) if len(t) > MAX_CHARS]
        if too_long:
            raise HTTPException(status_code=422, detail=f"texts {too_long[:5]} are longer than {MAX_CHARS} characters")
        try:
            t = with_model(translator(), request.adapter) if request.use_model else translator()
            results = t.translate_batch(request.texts, src, tgt, allow_model=request.use_model)
        except SigerError as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from exc
        return {
            "source": src, "target": tgt,
            "translations": [{"text": r.text, "stage": r.stage, "confidence": r.confidence, "unknown": r.unknown}
                             for r in results],
        }

    @router.post("/v1/lampung/gloss")
    def gloss(request: GlossRequest) -> dict[str, Any]:
        src, tgt = languages(request.source, request.target)
        try:
            t = translator()
            words = t.gloss(request.text, src, tgt)
            result = t.translate(request.text, src, tgt, allow_model=False)
        except SigerError as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from exc
        return {"source": src, "target": tgt, "words": words,
                "translation": {"text": result.text, "stage": result.stage, "confidence": result.confidence}}
