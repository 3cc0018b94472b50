"""Log-likelihoods of token sequences under a model.

Glossary: ``b`` batch, ``l`` sequence length, ``d`` model width, ``v`` vocabulary.

- ``ContinuationScorer``: contexts are prefilled through the runtime (``runtime.prefill``, one
  row at a time, so no padding enters the recurrence); each context's state is copied to its
  continuations with ``runtime.stack_states``, and the continuations are scored together from
  those states. A batch of continuations is one ``runtime.score`` call (outputs at every
  position; right-padded: padding after a continuation never changes its own positions); a
  runtime without ``score`` goes through ``runtime.step``, one position at a time.
- ``document_nll``: one document in chunks with the state carried across them (exact, memory
  bounded by a chunk whatever the length); ``windowed_nll``: fresh windows (what transformers do).

Everything goes through the runtime (``prefill``, ``score``, ``step``, ``stack_states``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass
class Scored:
    logprob: float  # sum of log p(token | everything before it), natural log
    tokens: int
    greedy: bool  # every token was the argmax


class ContinuationScorer:
    """``score([(context_ids, [continuation_ids, ...]), ...])`` -> per item, per continuation ``Scored``."""

    def __init__(self, model: Any, runtime: Any):
        self.model, self.runtime = model, runtime

    @torch.inference_mode()
    def score(self, items: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]]) -> list[list[Scored]]:
        first_logits, states, conts, owner = [], [], [], []
        for index, (context, continuations) in enumerate(items):
            if not context:
                raise ValueError("a context needs at least one token")
            logits, state = self.runtime.prefill({"input_ids": torch.tensor([list(context)])})  # (1, v)
            for cont in continuations:
                if not cont:
                    raise ValueError("a continuation needs at least one token")
                first_logits.append(logits)
                states.append(state)
                conts.append(list(cont))
                owner.append(index)
        if not conts:
            return [[] for _ in items]
        state = self.runtime.stack_states(states)
        logits = torch.cat(first_logits)  # (b, v)
        width = max(len(c) for c in conts)
        ids = torch.zeros(len(conts), width, dtype=torch.long)
        for row, cont in enumerate(conts):
            ids[row, : len(cont)] = torch.tensor(cont)
        all_logits = self._logits(logits, state, ids)  # (b, width, v)
        logprobs = torch.log_softmax(all_logits.float(), dim=-1)
        picked = logprobs.gather(-1, ids[..., None])[..., 0]  # (b, width)
        greedy = all_logits.argmax(-1) == ids  # (b, width)
        out: list[list[Scored]] = [[] for _ in items]
        for row, cont in enumerate(conts):
            n = len(cont)
            out[owner[row]].append(Scored(float(picked[row, :n].sum()), n, bool(greedy[row, :n].all())))
        return out

    def _logits(self, first: Tensor, state: Any, ids: Tensor) -> Tensor:
        """Logits before every continuation position: ``(b, v)`` and ids ``(b, w)`` -> ``(b, w, v)``."""
        if ids.shape[1] == 1:
            return first[:, None]
        if hasattr(self.runtime, "score"):
            rest, _ = self.runtime.score({"input_ids": ids[:, :-1]}, state)  # (b, w - 1, v)
        else:
            outs = []
            for t in range(ids.shape[1] - 1):
                step_logits, state = self.runtime.step({"input_ids": ids[:, t]}, state)
                outs.append(step_logits)
            rest = torch.stack(outs, dim=1)
        return torch.cat([first[:, None].to(rest.dtype), rest], dim=1)


def _nll(runtime: Any, ids: Tensor, targets: Tensor, state: Any) -> tuple[float, Any]:
    """Summed negative log-likelihood of ``targets`` ``(t,)`` after ``ids`` ``(l,)``, ``t <= l``
    (the last ``t`` positions are scored); returns the state after ``ids``."""
    if hasattr(runtime, "score"):
        logits, state = runtime.score({"input_ids": ids[None]}, state)  # (1, l, v)
    else:  # one position at a time through the runtime's step
        rows = []
        if state is None:
            first, state = runtime.prefill({"input_ids": ids[None, :1]})
            rows.append(first)
        else:
            first, state = runtime.step({"input_ids": ids[:1]}, state)
            rows.append(first)
        for t in range(1, ids.shape[0]):
            out, state = runtime.step({"input_ids": ids[t : t + 1]}, state)
            rows.append(out)
        logits = torch.stack(rows, dim=1)  # (1, l, v)
    logits = logits[0, ids.shape[0] - targets.shape[0] :]  # (t, v)
    return float(torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")), state


@torch.inference_mode()
def document_nll(runtime: Any, ids: Sequence[int] | Tensor, chunk: int = 1024) -> tuple[float, int]:
    """``(sum of -log p, tokens scored)`` of ``ids[1:]`` given everything before each, in one pass:
    ``chunk`` positions at a time with the state carried across, so memory does not grow with
    the length and nothing is encoded twice."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    total, state = 0.0, None
    n = ids.shape[0] - 1
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        nll, state = _nll(runtime, ids[start:stop], ids[start + 1 : stop + 1], state)
        total += nll
    return total, max(n, 0)


@torch.inference_mode()
def windowed_nll(runtime: Any, ids: Sequence[int] | Tensor, window: int, stride: int) -> tuple[float, int]:
    """``document_nll`` the way transformers score long texts: windows of ``window`` positions
    every ``stride``, each from a fresh state; a window scores only the tokens no earlier window
    scored (so each token is scored once, with up to ``window`` tokens of context)."""
    if stride > window:
        raise ValueError(f"stride ({stride}) must not exceed window ({window})")
    ids = torch.as_tensor(ids, dtype=torch.long)
    n = ids.shape[0] - 1
    total, done, begin = 0.0, 0, 0
    while done < n:
        end = min(begin + window, n)  # inputs begin..end-1 predict targets begin+1..end
        nll, _ = _nll(runtime, ids[begin:end], ids[done + 1 : end + 1], None)
        total += nll
        done = end
        begin += stride
    return total, max(n, 0)
