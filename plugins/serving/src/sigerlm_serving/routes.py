"""The /v1 API of sigerlm-serving, added through its own ``register_routes`` hook."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections import Counter
from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from sigerlm_serving import memory as mem
from sigerlm_serving import schemas as s
from sigerlm_serving.errors import ApiError
from sigerlm_serving.privacy import DomainError, redact, screen
from sigerlm_serving.service import AppState
from sigerlm_serving.streaming import AsyncJob, EventStream, SessionTurns, sse


def add_routes(router: APIRouter, state: AppState) -> None:
    store, tok = state.store, state.tokenizer
    turns = SessionTurns()

    def session_or_404(sid: str) -> dict:
        session = store.get_session(sid)
        if session is None:
            raise ApiError(404, "unknown_session", f"no session with id {sid!r}")
        return session

    def key_of(request: Request) -> str:
        return state.request_key(request)

    # -- status --------------------------------------------------------------------------------
    @router.get("/v1/status", tags=["status"])
    def status() -> dict[str, Any]:
        """Model identity, plugins and versions, adapters, uptime, runtime, limits."""
        return state.status()

    # -- generation ----------------------------------------------------------------------------
    def take_slot(request: Request) -> Any:
        """Count a generation against the caller's key (429 past the limit); returns its release."""
        slot = state.stream_slot(key_of(request))
        slot.__enter__()
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                slot.__exit__(None, None, None)

        return release

    async def run(
        request: Request,
        ids: list[int],
        config: Any,
        adapter: str | None,
        stream: bool,
        render_done: Any,
        finalize: Any = None,
        start: dict | None = None,
        release: Any = None,
        on_error: Any = None,
    ) -> Any:
        """Generate, as SSE (``start``?, ``delta``..., ``done`` | ``error``) or as one answer.
        ``finalize(completion)`` and ``on_error(message)`` run in a store thread when it ends."""
        release = release or take_slot(request)
        try:
            job = AsyncJob(state.scheduler, ids, config, adapter, finalize, deltas=stream, on_error=on_error)
        except BaseException as exc:
            release()
            if on_error is not None:
                await run_in_threadpool(on_error, f"generation could not start: {type(exc).__name__}")
            raise
        if not stream:
            try:
                completion, extra = await job.result(request)
            finally:
                release()
            return render_done(completion, extra)

        async def events():
            try:
                if start is not None:
                    yield sse("start", start)
                async for kind, payload in job.events():
                    if kind == "delta":
                        yield sse("delta", {"text": payload})
                    elif kind == "done":
                        yield sse("done", render_done(*payload))
                    else:
                        yield sse("error", {"error": {"code": "generation_failed", "message": payload}})
            finally:
                job.cancel()  # a no-op when it finished; stops decoding when the client left

        def close() -> None:
            job.cancel()
            release()

        return EventStream(events(), close)

    def generation_body(completion: Any) -> dict[str, Any]:
        return {
            "text": completion.text,
            "finish_reason": completion.finish_reason,
            "usage": completion.usage,
            "model": state.identity,
            "adapter": completion.adapter,
        }

    @router.post(
        "/v1/generate",
        tags=["generation"],
        response_model=s.GenerateResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE with stream"}},
    )
    async def generate(body: s.GenerateRequest, request: Request) -> Any:
        """Continue a prompt. With ``stream: true``: Server-Sent Events ``delta`` ({text}), then
        ``done`` (text, finish_reason, usage) or ``error``."""
        adapter = state.check_adapter(body.adapter)
        config = state.config(**body.sampling())
        ids = await run_in_threadpool(state.encode, body.prompt)
        return await run(request, ids, config, adapter, body.stream, lambda c, _: generation_body(c))

    @router.post(
        "/v1/chat",
        tags=["chat"],
        response_model=s.ChatResponse,
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE with stream"},
            404: {"description": "unknown session"},
        },
    )
    async def chat(body: s.ChatRequest, request: Request) -> Any:
        """One chat turn. Without ``session_id`` a session is created. The session's history and
        its memory (within the token budget) make the prompt; both messages are stored.
        Streaming sends ``start`` ({session_id}) first."""
        config = state.config(**body.sampling())
        if body.session_id is not None:
            session = await run_in_threadpool(session_or_404, body.session_id)
        else:
            state.check_adapter(body.adapter)
            await run_in_threadpool(check_system_prompt, body.system)
            session = await run_in_threadpool(store.create_session, body.system, body.adapter)
        sid = session["id"]
        adapter = state.check_adapter(body.adapter if body.adapter is not None else session.get("adapter"))
        release = take_slot(request)  # before the message is stored: a 429 leaves no unanswered message
        # one turn at a time per session: held from reading the history until the reply is stored
        end_turn = await turns.acquire(sid)
        try:
            session = await run_in_threadpool(session_or_404, sid)  # it may have been deleted meanwhile
            ids = await run_in_threadpool(build_chat_prompt, state, session, body.message, config.max_new_tokens)
            user_id = await run_in_threadpool(store.add_message, sid, "user", body.message)
        except BaseException:
            end_turn()
            release()
            raise

        def store_reply(text: str, reason: str) -> int | None:
            try:
                return store.add_message(sid, "assistant", text, reason, reply_to=user_id)
            except sqlite3.IntegrityError:  # the session was deleted while it generated
                return None
            finally:
                end_turn()

        def finalize(completion: Any) -> int | None:
            return store_reply(completion.text, completion.finish_reason)

        def failed(message: str) -> None:
            store_reply("", "error")  # the user's message keeps its (empty) reply: the history alternates

        def done(completion: Any, message_id: int | None) -> dict[str, Any]:
            return {**generation_body(completion), "session_id": sid, "message_id": message_id}

        return await run(
            request,
            ids,
            config,
            adapter,
            body.stream,
            done,
            finalize,
            start={"session_id": sid},
            release=release,
            on_error=failed,
        )

    def check_system_prompt(system: str | None) -> None:
        """A system prompt must leave room for a message and a reply of the default length."""
        if not system:
            return
        from sigerlm_text.chat_session import PromptBuilder

        ids = PromptBuilder(tok).build([{"role": "system", "content": system}, {"role": "user", "content": " "}])
        settings = state.settings
        room = min(settings.max_context_tokens - settings.default_max_new_tokens, settings.max_prompt_tokens)
        if len(ids) > room:
            raise ApiError(
                422,
                "system_too_long",
                f"the system prompt takes {len(ids)} tokens with a one-word message; this server's context "
                f"({settings.max_context_tokens} tokens, {settings.default_max_new_tokens} kept for the reply) "
                f"leaves room for {room}",
            )

    # -- sessions ------------------------------------------------------------------------------
    @router.post("/v1/sessions", tags=["sessions"], response_model=s.Session, status_code=201)
    def create_session(body: s.SessionCreate | None = None) -> dict:
        """Start a chat session (optionally with a system prompt and an adapter). A system prompt
        that leaves no room for a message and a reply is refused (422 ``system_too_long``)."""
        body = body or s.SessionCreate()
        state.check_adapter(body.adapter)
        check_system_prompt(body.system)
        return {**store.create_session(body.system, body.adapter, body.title), "messages": []}

    @router.get(
        "/v1/sessions/{session_id}",
        tags=["sessions"],
        response_model=s.Session,
        responses={404: {"description": "unknown session"}},
    )
    def get_session(session_id: str) -> dict:
        """A session and its messages."""
        return {**session_or_404(session_id), "messages": store.messages(session_id)}

    @router.delete(
        "/v1/chat/{session_id}", tags=["sessions"], status_code=204, responses={404: {"description": "unknown session"}}
    )
    def delete_session(session_id: str) -> Response:
        """Delete a session with its messages and memory."""
        if not store.delete_session(session_id):
            raise ApiError(404, "unknown_session", f"no session with id {session_id!r}")
        return Response(status_code=204)

    # -- memory --------------------------------------------------------------------------------
    @router.post(
        "/v1/chat/{session_id}/memory/document",
        tags=["memory"],
        response_model=s.MemoryStored,
        status_code=201,
        responses={404: {"description": "unknown session"}},
    )
    def add_document(session_id: str, body: s.DocumentIn) -> dict:
        """Store a document (chunked, searchable, marked untrusted)."""
        session_or_404(session_id)
        return mem.store_document(store, tok, session_id, body.text, body.title)

    @router.post(
        "/v1/chat/{session_id}/memory/tool-result",
        tags=["memory"],
        response_model=s.MemoryStored,
        status_code=201,
        responses={404: {"description": "unknown session"}},
    )
    def add_tool_result(session_id: str, body: s.ToolResultIn) -> dict:
        """Store a tool's output, condensed first (errors, numbers, paths, head and tail kept;
        repetition dropped); reports the tokens saved."""
        session_or_404(session_id)
        return mem.store_tool_result(store, tok, session_id, body.text, body.tool)

    @router.post(
        "/v1/chat/{session_id}/memory/fact",
        tags=["memory"],
        response_model=s.MemoryStored,
        status_code=201,
        responses={404: {"description": "unknown session"}},
    )
    def add_fact(session_id: str, body: s.FactIn) -> dict:
        """Store a short fact to remember (packed first)."""
        session_or_404(session_id)
        return mem.store_fact(store, tok, session_id, body.text)

    @router.get(
        "/v1/chat/{session_id}/memory",
        tags=["memory"],
        response_model=s.MemoryList,
        responses={404: {"description": "unknown session"}},
    )
    def list_memory(session_id: str) -> dict:
        session_or_404(session_id)
        return {"session_id": session_id, "items": store.memory_items(session_id)}

    # -- feedback ------------------------------------------------------------------------------
    def check_session_ref(sid: str | None, message_id: int | None = None) -> None:
        if sid is not None:
            session_or_404(sid)
        if message_id is not None:
            owner = store.message_session(message_id)
            if owner is None:
                raise ApiError(404, "unknown_message", f"no message with id {message_id}")
            if sid is not None and owner != sid:
                raise ApiError(422, "message_not_in_session", f"message {message_id} is not in session {sid!r}")

    @router.post("/v1/feedback/rating", tags=["feedback"], response_model=s.Stored, status_code=201)
    def rating(body: s.RatingIn) -> dict:
        check_session_ref(body.session_id, body.message_id)
        return {"id": store.add_feedback("rating", body.session_id, body.model_dump())}

    @router.post("/v1/feedback/preference", tags=["feedback"], response_model=s.Stored, status_code=201)
    def preference(body: s.PreferenceIn) -> dict:
        check_session_ref(body.session_id)
        return {"id": store.add_feedback("preference", body.session_id, body.model_dump())}

    @router.post("/v1/feedback/report", tags=["feedback"], response_model=s.Stored, status_code=201)
    def report(body: s.ReportIn) -> dict:
        check_session_ref(body.session_id, body.message_id)
        return {"id": store.add_feedback("report", body.session_id, body.model_dump())}

    # -- learning intake -----------------------------------------------------------------------
    def screen_records(records: list[s.IntakeRecord], request: Request) -> list[dict]:
        """Consent checked, the domain checked against the policy, every text field redacted
        (``source`` too), and who submitted it (a key id) noted."""
        screened = []
        for i, record in enumerate(records):
            where = f"records[{i}]: " if len(records) > 1 else ""
            if not record.consent:
                raise ApiError(
                    422,
                    "consent_required",
                    f"{where}consent must be true: records are only taken "
                    "with the consent of the person they come from",
                )
            fields = record.model_dump(include={"instruction", "input", "output", "system"}, exclude_none=True)
            try:
                result = screen(fields, record.domain)
            except DomainError as exc:
                raise ApiError(422, "unknown_domain", f"{where}{exc}") from None
            source = None
            if record.source is not None:
                source, found = redact(record.source)
                result["redactions"] = dict(Counter(result["redactions"]) + found)
            screened.append({**result, "consent": True, "source": source, "submitted_by": key_of(request)})
        return screened

    def intake_results(screened: list[dict], ids: list[str]) -> list[dict]:
        return [
            {"id": rid, "status": r["status"], "risk": r["risk"], "domain": r["domain"], "redactions": r["redactions"]}
            for rid, r in zip(ids, screened, strict=True)
        ]

    @router.post("/v1/learning/intake", tags=["learning"], response_model=s.IntakeResult, status_code=201)
    def intake(body: s.IntakeRecord, request: Request) -> dict:
        """Offer one example for training: redacted, checked for consent, classed by domain risk,
        stored as candidate or quarantine. Nothing trains on it before a human approves it.
        Answered only after the record is durably written."""
        screened = screen_records([body], request)
        return intake_results(screened, store.add_intake(screened))[0]

    @router.post("/v1/learning/intake/batch", tags=["learning"], response_model=s.IntakeBatchResult, status_code=201)
    def intake_batch(body: s.IntakeBatch, request: Request) -> dict:
        """Several records, stored together (all or none)."""
        screened = screen_records(body.records, request)
        return {"results": intake_results(screened, store.add_intake(screened))}

    @router.post("/v1/learning/approval", tags=["learning"], response_model=s.ApprovalResult)
    def approval(body: s.ApprovalIn, request: Request) -> dict:
        """Approve or reject records: only with a reviewer key (``--reviewer-key``), never the
        key that submitted a record; quarantined (high-risk) records need ``acknowledge_high_risk``."""
        if getattr(request.state, "siger_role", "client") != "reviewer":
            raise ApiError(
                403,
                "reviewer_key_required",
                "deciding on learning intake needs a reviewer key (the server's --reviewer-key), "
                "or `siger serving review` on the server's machine",
            )
        note = redact(body.note)[0] if body.note else None
        return {
            "results": store.decide_intake(
                body.ids,
                body.decision == "approve",
                redact(body.reviewer)[0],
                note,
                body.acknowledge_high_risk,
                decided_by=key_of(request),
            )
        }

    @router.get("/v1/learning/stats", tags=["learning"])
    def learning_stats() -> dict:
        return store.intake_stats()

    # -- OpenAI-compatible ---------------------------------------------------------------------
    def check_model(name: str) -> str | None:
        """The adapter a model name asks for: ``SIGER`` (or any id from /v1/models)."""
        base = state.identity
        if name in (base, "sigerlm", "default"):
            return None
        for adapter in state.adapters:
            if name in (f"{base}:{adapter}", adapter):
                return adapter
        raise ApiError(404, "model_not_found", f"model {name!r} is not served here; GET /v1/models lists them")

    @router.get("/v1/models", tags=["openai"])
    def models() -> dict:
        created = int(state.started)
        ids = [state.identity] + [f"{state.identity}:{a}" for a in state.adapters]
        return {
            "object": "list",
            "data": [{"id": i, "object": "model", "created": created, "owned_by": "sigerlm"} for i in ids],
        }

    def oai_usage(c: Any) -> dict:
        return c.usage

    def oai_reason(c: Any) -> str:
        return "length" if c.finish_reason == "length" else "stop"

    @router.post("/v1/chat/completions", tags=["openai"])
    async def chat_completions(body: s.ChatCompletionRequest, request: Request) -> Any:
        """OpenAI-compatible chat completion (``stream`` gives ``chat.completion.chunk`` events
        ending with ``data: [DONE]``)."""
        from sigerlm_text.chat_session import PromptBuilder

        adapter = check_model(body.model)
        config = state.config(**body.sampling())
        messages = []
        for m in body.messages:
            role = {"developer": "system", "tool": "user"}.get(m.role, m.role)
            if m.text():
                messages.append({"role": role, "content": m.text()})
        if not messages:
            raise ApiError(422, "empty_messages", "the messages hold no text")
        ids = await run_in_threadpool(PromptBuilder(tok).build, messages)
        state.check_prompt(ids)
        cid, created = "chatcmpl-" + uuid.uuid4().hex, int(time.time())
        if not body.stream:

            def render(c: Any, _: Any) -> dict:
                return {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": body.model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": c.text},
                            "finish_reason": oai_reason(c),
                        }
                    ],
                    "usage": oai_usage(c),
                }

            return await run(request, ids, config, adapter, False, render)
        return await oai_stream(request, ids, config, adapter, body, cid, created, chat=True)

    @router.post("/v1/completions", tags=["openai"])
    async def completions(body: s.CompletionRequest, request: Request) -> Any:
        """OpenAI-compatible text completion."""
        adapter = check_model(body.model)
        config = state.config(**body.sampling())
        ids = await run_in_threadpool(state.encode, body.text())
        cid, created = "cmpl-" + uuid.uuid4().hex, int(time.time())
        if not body.stream:

            def render(c: Any, _: Any) -> dict:
                return {
                    "id": cid,
                    "object": "text_completion",
                    "created": created,
                    "model": body.model,
                    "choices": [{"index": 0, "text": c.text, "logprobs": None, "finish_reason": oai_reason(c)}],
                    "usage": oai_usage(c),
                }

            return await run(request, ids, config, adapter, False, render)
        return await oai_stream(request, ids, config, adapter, body, cid, created, chat=False)

    async def oai_stream(
        request: Request,
        ids: list[int],
        config: Any,
        adapter: str | None,
        body: Any,
        cid: str,
        created: int,
        chat: bool,
    ) -> Any:
        kind = "chat.completion.chunk" if chat else "text_completion"
        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        def chunk(delta: str | None, reason: str | None, role: bool = False) -> dict:
            if chat:
                d: dict[str, Any] = (
                    {"role": "assistant", "content": ""} if role else ({"content": delta} if delta else {})
                )
                choice = {"index": 0, "delta": d, "finish_reason": reason}
            else:
                choice = {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": reason}
            return {"id": cid, "object": kind, "created": created, "model": body.model, "choices": [choice]}

        release = take_slot(request)
        try:
            job = AsyncJob(state.scheduler, ids, config, adapter)
        except BaseException:
            release()
            raise

        def close() -> None:
            job.cancel()
            release()

        async def events():
            try:
                if chat:
                    yield sse(None, chunk(None, None, role=True))
                async for event, payload in job.events():
                    if event == "delta":
                        yield sse(None, chunk(payload, None))
                    elif event == "done":
                        completion = payload[0]
                        yield sse(None, chunk(None, oai_reason(completion)))
                        if include_usage:
                            yield sse(
                                None,
                                {
                                    "id": cid,
                                    "object": kind,
                                    "created": created,
                                    "model": body.model,
                                    "choices": [],
                                    "usage": oai_usage(completion),
                                },
                            )
                    else:
                        yield sse(
                            None, {"error": {"message": payload, "type": "server_error", "code": "generation_failed"}}
                        )
                yield sse(None, "[DONE]")
            finally:
                job.cancel()

        return EventStream(events(), close)


def build_chat_prompt(state: AppState, session: dict, message: str, max_new_tokens: int) -> list[int]:
    """The session's conversation plus the new message (and packed memory), oldest turns dropped
    until prompt and reply fit ``max_context_tokens``. The memory turn is encoded as plain text:
    special-token text in a document (``<|system|>``, ``<thought>``) stays text."""
    from sigerlm_text.chat import ROLES
    from sigerlm_text.chat_session import PromptBuilder

    tok = state.tokenizer
    builder = PromptBuilder(tok)
    history = [
        {"role": m["role"], "content": m["content"] or " "}
        for m in state.store.messages(session["id"])
        if m["role"] in ("user", "assistant")
    ]
    context, _ = mem.pack(state.store, tok, session["id"], message, state.settings.memory_budget_tokens)
    system = [{"role": "system", "content": session["system"]}] if session.get("system") else []
    context_ids = (
        [tok.token_id(ROLES["user"])] + tok.encode(context, allow_special=False) + [builder.end] if context else []
    )
    latest = [{"role": "user", "content": message}]

    def render(history: list[dict], with_context: bool) -> list[int]:
        return (
            builder.build(system + history, open_assistant=False)
            + (context_ids if with_context else [])
            + builder.build(latest)
        )

    budget = state.settings.max_context_tokens - max_new_tokens
    with_context = bool(context)
    ids = render(history, with_context)
    while len(ids) > budget and history:
        history = history[2:] if len(history) > 1 else []
        ids = render(history, with_context)
    if len(ids) > budget and with_context:
        with_context = False
        ids = render([], False)
    if len(ids) > budget:
        raise ApiError(
            422,
            "prompt_too_long",
            f"the message and the reply need {len(ids) + max_new_tokens} tokens; "
            f"this server's context is {state.settings.max_context_tokens}",
        )
    state.check_prompt(ids)
    return ids
