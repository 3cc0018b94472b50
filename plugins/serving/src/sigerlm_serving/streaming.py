"""Bridges between the decode thread and the event loop: Server-Sent Events, waiting for a
completion without blocking the loop, and a streaming response that always releases its
resources (stream slot, decode row) when the client goes away."""

from __future__ import annotations

import asyncio
import json
import threading
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from starlette.requests import Request
from starlette.responses import StreamingResponse

from sigerlm_serving.errors import ApiError

#: Writes that follow a finished generation (the assistant's message) run here, off the decode thread.
_writer = ThreadPoolExecutor(max_workers=2, thread_name_prefix="siger-store")


class _Mailbox:
    """Events from the decode thread for one event loop: one wake-up per batch of events (a
    decode step finishing 16 rows wakes the loop once, not 16 times)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.items, self.lock, self.scheduled = loop, deque(), threading.Lock(), False

    def post(self, queue: asyncio.Queue, event: Any) -> None:
        with self.lock:
            self.items.append((queue, event))
            if self.scheduled:
                return
            self.scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop has closed: nobody is listening
            pass

    def _drain(self) -> None:
        with self.lock:
            items, self.scheduled = list(self.items), False
            self.items.clear()
        for queue, event in items:
            queue.put_nowait(event)


_mailboxes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_mailboxes_lock = threading.Lock()


def _mailbox(loop: asyncio.AbstractEventLoop) -> _Mailbox:
    with _mailboxes_lock:
        box = _mailboxes.get(loop)
        if box is None:
            box = _mailboxes[loop] = _Mailbox(loop)
        return box


def sse(event: str | None, data: Any) -> str:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"


class SessionTurns:
    """One chat turn at a time per session (within a server process): a turn holds its session
    from reading the history until its reply is stored, so the history alternates user and
    assistant however many requests arrive at once, and a reply cancelled by a client that
    left is stored before that client's next message."""

    def __init__(self) -> None:
        self._locks: dict[str, list] = {}  # session id -> [asyncio.Lock, holders and waiters]

    async def acquire(self, sid: str) -> Callable[[], None]:
        """Wait for the session; returns ``release()``, callable once from any thread."""
        entry = self._locks.setdefault(sid, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            await entry[0].acquire()
        except BaseException:
            self._drop(sid, entry)
            raise
        loop, owner, once = asyncio.get_running_loop(), threading.get_ident(), threading.Lock()

        def on_loop() -> None:
            entry[0].release()
            self._drop(sid, entry)

        def release() -> None:
            if not once.acquire(blocking=False):
                return  # released already
            if threading.get_ident() == owner:
                on_loop()
            else:
                try:
                    loop.call_soon_threadsafe(on_loop)
                except RuntimeError:  # the loop has closed: nobody waits any more
                    pass

        return release

    def _drop(self, sid: str, entry: list) -> None:
        entry[1] -= 1
        if entry[1] <= 0 and self._locks.get(sid) is entry:
            del self._locks[sid]


class AsyncJob:
    """A scheduler job whose events arrive on an ``asyncio.Queue``. ``finalize(completion)``, if
    given, runs in a store thread when the job finishes (even if the client has gone) and its
    result comes with the ``done`` event; ``on_error(message)`` runs there when it fails."""

    def __init__(
        self,
        scheduler: Any,
        ids: list[int],
        config: Any,
        adapter: str | None,
        finalize: Callable[[Any], Any] | None = None,
        deltas: bool = True,
        on_error: Callable[[str], Any] | None = None,
    ):
        self.deltas = deltas  # False: only the outcome is wanted (no event per token)
        self.loop = asyncio.get_running_loop()
        self.mailbox = _mailbox(self.loop)
        self.queue: asyncio.Queue = asyncio.Queue()
        self.finalize, self.on_error = finalize, on_error
        try:
            self.job = scheduler.submit(ids, config, self._put, adapter)
        except RuntimeError:
            if getattr(scheduler, "_stopping", False):  # a request that arrives while the server stops
                raise ApiError(503, "unavailable", "the server is shutting down; try again") from None
            raise

    def _put(self, event: tuple[str, Any]) -> None:
        if event[0] == "delta" and not self.deltas:
            return
        if event[0] == "done":
            future: Future | None = _writer.submit(self.finalize, event[1]) if self.finalize else None
            event = ("done", (event[1], future))
        elif event[0] == "error" and self.on_error is not None:
            _writer.submit(self.on_error, event[1])
        self.mailbox.post(self.queue, event)

    def cancel(self) -> None:
        self.job.cancel()

    async def events(self):
        """``("delta", text)``... then ``("done", (completion, extra))`` or ``("error", message)``.
        Deltas already waiting are merged into one, so a slow reader gets fewer, larger events."""
        while True:
            event = await self.queue.get()
            if event[0] == "delta":
                parts = [event[1]]
                while not self.queue.empty() and self.queue._queue[0][0] == "delta":  # type: ignore[attr-defined]
                    parts.append(self.queue.get_nowait()[1])
                event = ("delta", "".join(parts))
            if event[0] == "done":
                completion, future = event[1]
                extra = await asyncio.wrap_future(future) if future is not None else None
                yield "done", (completion, extra)
                return
            yield event
            if event[0] == "error":
                return

    async def result(self, request: Request) -> tuple[Any, Any]:
        """Wait for the completion; a client that disconnects cancels the job."""
        try:
            checked = self.loop.time()
            while True:
                try:
                    event = await asyncio.wait_for(self.queue.get(), 0.5)
                except asyncio.TimeoutError:
                    event = None
                if self.loop.time() - checked >= 0.5:
                    checked = self.loop.time()
                    if await request.is_disconnected():
                        self.cancel()
                        raise ApiError(499, "client_closed_request", "the client closed the request")
                if event is None or event[0] == "delta":
                    continue
                if event[0] == "error":
                    raise ApiError(500, "generation_failed", event[1])
                if event[0] == "done":
                    completion, future = event[1]
                    extra = await asyncio.wrap_future(future) if future is not None else None
                    return completion, extra
        except asyncio.CancelledError:
            self.cancel()
            raise


class EventStream(StreamingResponse):
    """``text/event-stream`` that calls ``on_close`` however the response ends (finished,
    failed, client disconnected, or never started)."""

    def __init__(self, content: Any, on_close: Callable[[], None]):
        super().__init__(
            content, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        self._on_close = on_close

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()
