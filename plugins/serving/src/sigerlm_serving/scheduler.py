"""The decode scheduler: one worker thread decodes every running request together.

The backbone's state has a fixed size per sequence, so a request joins the running batch at
any step (its prompt is prefilled without padding, together with waiting prompts of the same
length, then its state is stacked onto the batch) and
leaves it the step it finishes (its rows are selected out). One ``runtime.step`` serves every
row, which is where batching pays: a step of 16 rows costs little more than a step of one.

Requests for different LoRA adapters cannot share a step (the weights differ), so the batch
holds one adapter at a time; when requests for another adapter wait, the running group stops
admitting and the next group starts once it drains (oldest waiting first).

Each row is a ``sigerlm_text.generation.RowDecoder``, the generator's own rules: end tokens,
stop strings (outside ``<thought>``), ``max_new_tokens``, ``hide_thought``, and text deltas that
never split a UTF-8 character or reveal the start of a stop string. A cancelled request (its client went
away) leaves at the next step. Glossary: ``b`` batch, ``v`` vocabulary.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from sigerlm_text.generation import DecodeRules, GenerationConfig, RowDecoder, sample

log = logging.getLogger("sigerlm.serving")
_ids = itertools.count(1)


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop", "length", "cancelled" or "error"
    prompt_tokens: int
    completion_tokens: int
    adapter: str | None = None

    @property
    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


Event = tuple[str, Any]  # ("delta", str) | ("done", Completion) | ("error", str)


@dataclass
class Job:
    prompt_ids: list[int]
    config: GenerationConfig
    on_event: Callable[[Event], None]
    adapter: str | None = None
    id: int = field(default_factory=lambda: next(_ids))
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.perf_counter)
    decoder: RowDecoder | None = None  # the row's decoding rules (sigerlm_text.generation)
    history: Any = None
    generator: Any = None
    finished: bool = False

    def cancel(self) -> None:
        self.cancelled.set()


class DecodeScheduler:
    def __init__(
        self, runtime: Any, tokenizer: Any, max_batch: int = 32, set_adapter: Callable[[str | None], None] | None = None
    ):
        self.runtime, self.tokenizer, self.max_batch = runtime, tokenizer, max_batch
        self.set_adapter = set_adapter
        self.rules = DecodeRules(tokenizer)
        self._pending: deque[Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._current_adapter: str | None = None
        self.stats = {
            "steps": 0,
            "tokens": 0,
            "requests": 0,
            "max_batch_seen": 0,
            "active": 0,
            "waiting": 0,
            "cancelled": 0,
        }
        self._thread = threading.Thread(target=self._loop, name="siger-decode", daemon=True)
        self._thread.start()

    # -- public ------------------------------------------------------------------------------------
    def submit(
        self,
        prompt_ids: Sequence[int],
        config: GenerationConfig,
        on_event: Callable[[Event], None],
        adapter: str | None = None,
    ) -> Job:
        if not prompt_ids:
            raise ValueError("the prompt has no tokens")
        job = Job(list(prompt_ids), config, on_event, adapter)
        job.decoder = RowDecoder(self.rules, config, len(job.prompt_ids))
        with self._cond:
            if self._stopping:
                raise RuntimeError("the scheduler is stopped")
            self._pending.append(job)
            self.stats["requests"] += 1
            self._cond.notify()
        return job

    def run(
        self,
        prompt_ids: Sequence[int],
        config: GenerationConfig,
        adapter: str | None = None,
        timeout: float | None = None,
    ) -> Completion:
        """Blocking: the finished completion (call from a worker thread, never the event loop)."""
        done = threading.Event()
        box: dict[str, Any] = {}

        def on_event(event: Event) -> None:
            if event[0] in ("done", "error"):
                box[event[0]] = event[1]
                done.set()

        job = self.submit(prompt_ids, config, on_event, adapter)
        if not done.wait(timeout):
            job.cancel()
            raise TimeoutError("generation timed out")
        if "error" in box:
            raise RuntimeError(box["error"])
        return box["done"]

    def close(self, timeout: float = 10) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)

    # -- the loop ----------------------------------------------------------------------------------
    def _loop(self) -> None:
        active: list[Job] = []
        logits = state = None
        while True:
            with self._cond:
                while not self._pending and not active and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    for job in list(self._pending) + active:
                        self._finish(job, "cancelled")
                    self._pending.clear()
                    return
                admitted = self._admit(len(active))
                self.stats["waiting"] = len(self._pending)
            try:
                if admitted:
                    if not active and self.set_adapter is not None and admitted[0].adapter != self._current_adapter:
                        self.set_adapter(admitted[0].adapter)
                        self._current_adapter = admitted[0].adapter
                    new_logits, new_states, joined = [], [], []
                    by_length: dict[int, list[Job]] = {}
                    for job in admitted:
                        if job.cancelled.is_set():
                            self._finish(job, "cancelled")
                        else:
                            by_length.setdefault(len(job.prompt_ids), []).append(job)
                    for group in by_length.values():  # equal lengths prefill together: no padding
                        group_logits, group_state = self.runtime.prefill(
                            {"input_ids": torch.tensor([j.prompt_ids for j in group])}
                        )
                        for job in group:
                            job.history = torch.tensor(job.prompt_ids)
                            if job.config.seed is not None:
                                job.generator = torch.Generator().manual_seed(job.config.seed)
                        new_logits.append(group_logits)
                        new_states.append(group_state)
                        joined.extend(group)
                    if joined:
                        parts = ([state] if active else []) + new_states
                        state = self.runtime.stack_states(parts)
                        logits = torch.cat(([logits] if active else []) + new_logits)
                        active = active + joined
                if not active:
                    continue
                self.stats["max_batch_seen"] = max(self.stats["max_batch_seen"], len(active))
                self.stats["active"] = len(active)
                next_ids = self._sample(logits, active)
                keep = []
                for slot, job in enumerate(active):
                    if job.cancelled.is_set():
                        self._finish(job, "cancelled")
                    elif not self._advance(job, int(next_ids[slot])):
                        keep.append(slot)
                if len(keep) < len(active):
                    if not keep:
                        active, logits, state = [], None, None
                        self.stats["active"] = 0
                        continue
                    rows = torch.tensor(keep)
                    state = self.runtime.select_rows(state, rows)
                    next_ids = next_ids.index_select(0, rows)
                    active = [active[s] for s in keep]
                logits, state = self.runtime.step({"input_ids": next_ids}, state)
                self.stats["steps"] += 1
            except Exception as exc:  # a failing step must not take the server down
                log.exception("decode step failed")
                for job in active + [j for j in (admitted or []) if not j.finished]:
                    self._fail(job, f"generation failed: {type(exc).__name__}")
                active, logits, state = [], None, None
                self.stats["active"] = 0

    def _admit(self, running: int) -> list[Job]:
        """Waiting jobs that may join now: same adapter as the running batch, room permitting."""
        if not self._pending:
            return []
        if running:
            adapter = self._current_adapter
            if self._pending[0].adapter != adapter:
                return []  # another adapter waits longest: let this batch drain
        else:
            adapter = self._pending[0].adapter
        taken, rest = [], deque()
        while self._pending:
            job = self._pending.popleft()
            if job.adapter == adapter and running + len(taken) < self.max_batch:
                taken.append(job)
            else:
                rest.append(job)
        self._pending = rest
        return taken

    def _sample(self, logits: Any, active: list[Job]) -> Any:
        next_ids = logits.argmax(-1)  # (b,) greedy rows need nothing more
        for slot, job in enumerate(active):
            c = job.config
            if c.temperature != 0 or c.repetition_penalty != 1.0:
                next_ids[slot] = sample(logits[slot : slot + 1], c, [job.history], job.generator)[0]
        return next_ids

    def _advance(self, job: Job, token: int) -> bool:
        """Take one token for ``job``; True when the job has finished."""
        before = len(job.decoder.ids)
        delta = job.decoder.push(token)
        self.stats["tokens"] += len(job.decoder.ids) - before
        if delta:
            self._send(job, ("delta", delta))
        if job.decoder.finished:
            self._finish(job, job.decoder.finish_reason)
            return True
        if job.config.repetition_penalty != 1.0:
            job.history = torch.cat([job.history, torch.tensor([token])])
        return False

    def _finish(self, job: Job, reason: str) -> None:
        if job.finished:
            return
        delta = job.decoder.finish(reason)
        if delta:
            self._send(job, ("delta", delta))
        job.finished = True
        if reason == "cancelled":
            self.stats["cancelled"] += 1
        tokens = len(job.decoder.ids)
        completion = Completion(job.decoder.text, reason, len(job.prompt_ids), tokens, job.adapter)
        self._send(job, ("done", completion))

    def _fail(self, job: Job, message: str) -> None:
        if not job.finished:
            job.finished = True
            self._send(job, ("error", message))

    @staticmethod
    def _send(job: Job, event: Event) -> None:
        try:
            job.on_event(event)
        except Exception:  # a consumer's callback must not break the batch
            log.exception("event callback failed")
