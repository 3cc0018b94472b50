"""Scores of a series model: accuracy, macro-F1, a confusion matrix and prefix accuracy for
classification; MAE, RMSE and MASE (with the seasonal-naive forecast's MASE beside it) for
forecasting.

The evaluators follow the contract ``factory(run, options) -> {metric: number}`` and score
``sigerlm.assemble.current_model(run)`` on a split of the run's data. The confusion matrix,
which is not a number, goes to ``<out_dir>/confusion.json`` (on the main process).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from sigerlm.errors import SigerError


# -- metrics -----------------------------------------------------------------------------------
def confusion_matrix(truth: Iterable[int], predicted: Iterable[int], k: int) -> np.ndarray:
    """``m[i, j]``: series of class ``i`` predicted as ``j``."""
    m = np.zeros((k, k), dtype=np.int64)
    for t, p in zip(truth, predicted, strict=True):
        m[t, p] += 1
    return m


def macro_f1(m: np.ndarray) -> float:
    """The mean over classes that occur (in truth or prediction) of their F1."""
    scores = []
    for i in range(len(m)):
        tp, fp, fn = m[i, i], m[:, i].sum() - m[i, i], m[i].sum() - m[i, i]
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def mase(pred: np.ndarray, truth: np.ndarray, scale: np.ndarray) -> float:
    """Mean absolute error over every value, each channel divided by its in-sample scale."""
    return float(np.nanmean(np.abs(pred - truth) / np.where(scale > 0, scale, np.nan)))


# -- model outputs -----------------------------------------------------------------------------
def _series_adapter(model: Any, head: str) -> Any:
    adapter = model.adapter
    if getattr(adapter, "options", None) is None or getattr(adapter.options, "head", None) != head:
        raise SigerError(f"this evaluator needs a model with the series adapter's '{head}' head")
    return adapter


@torch.no_grad()
def class_logits(model: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``(b, k)`` logits of whole series."""
    hidden = model.forward_hidden(model.adapter.embed(batch))  # (b, n, d)
    return model.adapter.class_logits(batch, hidden)


def prefix_batch(batch: Mapping[str, torch.Tensor], fraction: float) -> dict[str, torch.Tensor]:
    """Each series cut to its first ``ceil(fraction * length)`` steps (the rest masked)."""
    length = batch["length"]
    keep = torch.clamp(torch.ceil(length.double() * fraction).long(), min=1)
    steps = torch.arange(batch["values"].shape[1])
    inside = (steps[None] < keep[:, None]).to(batch["mask"].dtype)[..., None]  # (b, l, 1)
    cut = int(keep.max())
    return {
        "values": (batch["values"] * inside)[:, :cut],
        "mask": (batch["mask"] * inside)[:, :cut],
        "length": keep,
    }


@torch.no_grad()
def forecast(model: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``(b, h, c)`` forecasts after each window, in the original scale."""
    hidden = model.forward_hidden(model.adapter.embed(batch))
    return model.adapter.forecast(batch, hidden)


# -- evaluators --------------------------------------------------------------------------------
def evaluate_classification(run: Any, o: Any) -> dict[str, float]:
    from sigerlm.assemble import current_model

    model = current_model(run)
    adapter = _series_adapter(model, "classify")
    k = len(adapter.classes)
    truth: list[int] = []
    predicted: dict[float, list[int]] = {f: [] for f in o.prefixes}
    for i, batch in enumerate(run.dataset(o.split)):
        if o.batches is not None and i >= o.batches:
            break
        truth += batch["label"].tolist()
        for fraction in o.prefixes:
            part = batch if fraction >= 1 else prefix_batch(batch, fraction)
            predicted[fraction] += class_logits(model, part).argmax(-1).tolist()
    if not truth:
        raise SigerError(f"data.{o.split} yielded no series to evaluate")
    full = predicted.get(1.0) or predicted[max(predicted)]
    m = confusion_matrix(truth, full, k)
    out = {"accuracy": float(np.trace(m) / m.sum()), "macro_f1": macro_f1(m), "series": float(len(truth))}
    for fraction, preds in predicted.items():
        right = sum(int(t == p) for t, p in zip(truth, preds, strict=True))
        out[f"prefix_accuracy_{round(fraction * 100)}"] = right / len(truth)
    if run.is_main:
        report = {"classes": adapter.classes, "matrix": m.tolist(), "split": o.split}
        (run.out_dir / "confusion.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return out


def evaluate_forecast(run: Any, o: Any) -> dict[str, float]:
    from sigerlm.assemble import current_model

    model = current_model(run)
    _series_adapter(model, "forecast")
    data = run.dataset(o.split)
    preds, naive, truth = [], [], []
    for i, batch in enumerate(data):
        if o.batches is not None and i >= o.batches:
            break
        preds.append(forecast(model, batch).numpy())
        truth.append(batch["target"].numpy())
        naive.append(seasonal_naive(batch["values"].numpy(), truth[-1].shape[1], o.season))
    if not preds:
        raise SigerError(f"data.{o.split} yielded no windows to evaluate")
    pred, real, base = (np.concatenate(x) for x in (preds, truth, naive))
    scale = data.mase_scale(o.season) if hasattr(data, "mase_scale") else np.nanmean(np.abs(np.diff(real, axis=1)))
    return {
        "mae": float(np.mean(np.abs(pred - real))),
        "rmse": float(math.sqrt(np.mean((pred - real) ** 2))),
        "mase": mase(pred, real, scale),
        "naive_mase": mase(base, real, scale),
        "windows": float(len(real)),
    }


def seasonal_naive(context: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """``(b, h, c)``: each future step repeats the value one season before it."""
    last = context[:, -season:]  # (b, m, c)
    reps = math.ceil(horizon / season)
    return np.tile(last, (1, reps, 1))[:, :horizon]


def evaluate_step(run: Any, o: Any) -> dict[str, float]:
    """Score the run's model with the evaluator that fits its head, and log the result."""
    from sigerlm.assemble import current_model
    from sigerlm_timeseries.options import ClassificationEvalOptions, ForecastEvalOptions

    head = getattr(getattr(current_model(run).adapter, "options", None), "head", None)
    if head == "classify":
        out = evaluate_classification(run, ClassificationEvalOptions(split=o.split, prefixes=o.prefixes))
    elif head == "forecast":
        out = evaluate_forecast(run, ForecastEvalOptions(split=o.split, season=o.season))
    else:
        raise SigerError("series-evaluate needs a model with the series adapter")
    run.logger.info("evaluation on %s: %s", o.split, ", ".join(f"{k} {v:.4g}" for k, v in out.items()))
    return out
