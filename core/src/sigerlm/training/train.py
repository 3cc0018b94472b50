"""The ``train`` step: modality-neutral training of the manifest's model.

Batches come from a registered dataset (``data.<train_split>``), the loss from the model (the
adapter's loss plus the weighted auxiliary losses its blocks report). AdamW without weight
decay on parameters tagged ``_no_weight_decay``; a cosine schedule with linear warm-up and a
floor, fitted to ``max_steps`` or to the steps that fit in ``max_minutes``; gradient
accumulation; clipping; evaluation every ``eval_every`` steps next to the adapter's baseline;
only the parameters left trainable by transforms are optimized (LoRA); checkpoints from which
``siger run --resume`` continues exactly; ``metrics.jsonl`` (one line a step, with every
auxiliary metric), a progress bar, ``loss.png`` and the final model folder. A loss or gradient
norm that stops being finite fails the run, keeping the last good checkpoint.

Distribution (DDP under ``torchrun``), mixed precision, the progress bar, the plot and the time
budget live in ``sigerlm.training.support``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator, Mapping
from typing import Any

from sigerlm.errors import SigerError
from sigerlm.training.options import TrainOptions

log = logging.getLogger("sigerlm.train")


class TrainingError(SigerError):
    """Training cannot go on (a loss that is no longer finite); the message names the step."""


def lr_at(step: int, o: TrainOptions, total: int) -> float:
    """Linear warm-up to ``lr``, then cosine down to ``lr * min_lr_ratio`` at step ``total``."""
    if o.warmup_steps and step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    span = max(1, total - o.warmup_steps)
    progress = min(1.0, (step - o.warmup_steps) / span)
    floor = o.lr * o.min_lr_ratio
    return floor + (o.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if getattr(p, "_no_weight_decay", False) or p.ndim < 2 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Batches:
    """Endless batches over epochs, with a position that can be restored exactly."""

    def __init__(self, dataset: Any, epoch: int = 0, index: int = 0):
        self.dataset, self.epoch, self.index = dataset, epoch, index
        self._it: Iterator[Any] | None = None

    def _start(self) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)
        self._it = iter(self.dataset)
        for _ in range(self.index):  # fast-forward to the saved position
            next(self._it)

    def __next__(self) -> Any:
        if self._it is None:
            self._start()
        try:
            batch = next(self._it)  # type: ignore[arg-type]
        except StopIteration:
            if self.index == 0:
                raise SigerError("the training dataset yields no batches") from None
            self.epoch, self.index = self.epoch + 1, 0
            self._start()
            batch = next(self._it)  # type: ignore[arg-type]
        self.index += 1
        return batch

    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}


def count_tokens(model: Any, batch: Mapping[str, Any]) -> int:
    """Positions that carry a loss: the adapter's ``count_tokens``, else batch x length."""
    count = getattr(model.adapter, "count_tokens", None)
    if callable(count):
        return int(count(batch))
    first = next(iter(batch.values()))
    return int(first.shape[0] * first.shape[1]) if first.ndim > 1 else int(first.numel())


def _to(batch: Mapping[str, Any], device: Any) -> dict[str, Any]:
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}


def evaluate(model: Any, dataset: Any, batches: int, device: Any, dist: Any = None) -> dict[str, float]:
    """Token-weighted mean loss and perplexity over ``batches`` batches, with the auxiliary
    metrics the model reports (averaged over batches, then over ranks)."""
    import torch

    was_training = model.training
    model.eval()
    total, tokens, count, aux = 0.0, 0, 0, {}
    with torch.no_grad():
        for i, batch in enumerate(dataset):
            if i >= batches:
                break
            n = count_tokens(model, batch)
            total += float(model(_to(batch, device)).detach()) * n
            tokens, count = tokens + n, count + 1
            for key, value in model.last_metrics.items():
                aux[key] = aux.get(key, 0.0) + value
    model.train(was_training)
    sums = {"loss_sum": total, "tokens": float(tokens), **{k: v / max(count, 1) for k, v in aux.items()}}
    if dist is not None:
        sums = dist.reduce(sums, mean=list(aux))
    loss = sums["loss_sum"] / max(sums["tokens"], 1)
    out = {"loss": loss, "perplexity": math.exp(min(loss, 50)), "tokens": int(sums["tokens"])}
    out.update({k: sums[k] for k in aux})
    return out


def train(run: Any, o: TrainOptions) -> dict[str, Any]:
    """The train step's factory: trains, checkpoints, evaluates, saves; returns the summary."""
    import numpy as np
    import torch

    from sigerlm.assemble import model_for_run
    from sigerlm.training import checkpoints, support

    dist = support.Distributed.start()
    if o.threads:
        torch.set_num_threads(o.threads)
    device = dist.device(o.device)
    torch.manual_seed(run.seed)
    np.random.seed(run.seed)
    model = model_for_run(run).to(device)
    model.train()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("parameters: %d trainable of %d (%.2f%%)", trainable, total, 100 * trainable / max(total, 1))
    optimizer = torch.optim.AdamW(param_groups(model, o.weight_decay), lr=o.lr, betas=o.betas)
    ckpt_dir, metrics_path = run.out_dir / "checkpoints", run.out_dir / "metrics.jsonl"
    start_step, extra, history = 0, {"data": {"epoch": 0, "index": 0}}, []
    if run.is_main:
        checkpoints.clean_orphans(ckpt_dir)
    if run.resume:
        found = checkpoints.latest(ckpt_dir)
        if found is None and checkpoints.exists(ckpt_dir):
            raise TrainingError(f"every checkpoint in {ckpt_dir} is damaged; start over with --force")
        if found is not None:
            saved = checkpoints.load(found, model, optimizer)
            start_step, extra = saved["step"], saved["extra"]
            log.info("resumed from %s (step %d)", found, start_step)
            if metrics_path.exists():
                history = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
                history = [h for h in history if h.get("step", 0) <= start_step]
    ddp_model = dist.wrap(model, device)
    precision = support.Precision(o.autocast, device)
    train_data = run.dataset(o.train_split)
    valid_data = run.dataset(o.valid_split) if o.valid_split and o.valid_split in run.manifest.data else None
    batches = Batches(train_data, extra["data"]["epoch"], extra["data"]["index"])
    budget = support.Budget(o.max_steps, o.max_minutes, extra.get("budget"))
    log_file = support.MetricsLog(metrics_path, history, run.is_main)
    progress = support.Progress(o.max_steps, start_step) if o.progress and run.is_main else None
    evals: list[dict[str, Any]] = [h for h in history if "valid_loss" in h]
    started, tokens_seen, last, step = time.perf_counter(), 0, {}, start_step
    baseline_keys: list[str] = []
    try:
        while step < budget.steps:
            lr = lr_at(step, o, budget.steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            step_start, sums = time.perf_counter(), {"loss": 0.0, "tokens": 0.0}
            for micro in range(o.grad_accum):
                batch = _to(next(batches), device)
                with dist.sync(ddp_model, micro == o.grad_accum - 1), precision.autocast():
                    loss = ddp_model(batch) / o.grad_accum
                precision.backward(loss)
                sums["loss"] += float(loss.detach())
                sums["tokens"] += count_tokens(model, batch)
                for key, value in model.last_metrics.items():
                    sums[key] = sums.get(key, 0.0) + value / o.grad_accum
            grad_norm = precision.step(optimizer, model, o.grad_clip)
            optimizer.zero_grad(set_to_none=True)
            aux = [k for k in sums if k not in ("loss", "tokens")]
            sums = dist.reduce(sums, mean=["loss", *aux])
            step += 1
            if not (math.isfinite(sums["loss"]) and math.isfinite(grad_norm)):
                raise TrainingError(
                    f"step {step}: the loss ({sums['loss']}) or gradient norm ({grad_norm}) is no longer finite; "
                    f"lower lr or check the data; the last good checkpoint is kept in {ckpt_dir}"
                )
            elapsed = time.perf_counter() - step_start
            tokens_seen += int(sums["tokens"])
            last = {"step": step, "loss": sums["loss"], "lr": lr, "grad_norm": grad_norm, "tokens": int(sums["tokens"])}
            last.update({k: sums[k] for k in aux})
            last.update(tokens_per_s=sums["tokens"] / elapsed, elapsed=round(time.perf_counter() - started, 3))
            budget.observe(step - start_step, time.perf_counter() - started, step)
            done = step >= budget.steps
            if valid_data is not None and (done or (o.eval_every and step % o.eval_every == 0)):
                result = evaluate(model, valid_data, o.eval_batches, device, dist)
                last.update(valid_loss=result["loss"], valid_perplexity=result["perplexity"])
                last.update({f"valid_{k}": result[k] for k in result if k not in ("loss", "perplexity", "tokens")})
                evals.append(last)
            log_file.write(last)
            if progress is not None:
                progress.update(last, budget.steps)
            if run.is_main and (done or (o.checkpoint_every and step % o.checkpoint_every == 0)):
                state = {"data": batches.position(), "budget": budget.state()}
                checkpoints.save(ckpt_dir, step, model, optimizer, state, o.keep_checkpoints)
    finally:
        if progress is not None:
            progress.close()
        log_file.close()

    summary: dict[str, Any] = {
        "steps": step,
        "ended_by": budget.ended_by(step),
        "final_loss": last.get("loss"),
        "trainable_parameters": trainable,
        "parameters": total,
    }
    if evals:
        summary.update(valid_loss=evals[-1]["valid_loss"], valid_perplexity=evals[-1]["valid_perplexity"])
        baseline = getattr(model.adapter, "baseline", None)
        if o.baseline != "none" and callable(baseline) and valid_data is not None:
            scores = baseline(run.dataset(o.train_split), valid_data, o.eval_batches)
            summary.update(scores)
            baseline_keys = list(scores)
    summary.update({k: v for k, v in last.items() if k not in support.STANDARD})
    if run.is_main:
        if o.save_model:
            summary["model"] = str(model.save(run.out_dir / o.save_model, support.plugin_versions(run)))
        if o.plot:
            summary["plot"] = str(support.plot(metrics_path, run.out_dir / "loss.png"))
    tokens_per_s = tokens_seen / max(time.perf_counter() - started, 1e-9)
    summary["tokens_per_s"] = tokens_per_s
    run.state["model"] = model.eval()  # for later steps (evaluation) of the same run
    text = f"trained {step} steps ({summary['ended_by']})"
    if summary["final_loss"] is not None:
        text += f": loss {summary['final_loss']:.4f}"
    if "valid_perplexity" in summary:
        text += f", valid perplexity {summary['valid_perplexity']:.2f}"
        text += "".join(f", {k} {summary[k]:.2f}" for k in baseline_keys)
    log.info("%s, %.0f tokens/s", text, tokens_per_s)
    return summary
