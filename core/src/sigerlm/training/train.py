"""The ``train`` step: modality-neutral training of the manifest's model.

Batches come from a registered dataset (``data.<train_split>``), the loss from the adapter.
AdamW without weight decay on parameters tagged ``_no_weight_decay`` (norms, biases, ``A_log``,
``D``, embeddings); a cosine schedule with linear warm-up and a floor; gradient accumulation;
clipping (the norm is reported); autocast on CUDA; seeded, reproducible CPU runs; evaluation
every ``eval_every`` steps (loss and perplexity, next to a unigram baseline from the same
data); only the parameters left trainable by the model's transforms are optimized (LoRA);
checkpoints every ``checkpoint_every`` steps and at the end (the newest ``keep``), from
which ``siger run --resume`` continues exactly; ``metrics.jsonl`` (one line a step), a
progress bar, a loss plot (``loss.png``) and the final model folder.

Under ``torchrun`` the same manifest trains with DistributedDataParallel (gloo on CPU, nccl on
CUDA): each rank reads its own shard, and only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sigerlm.training.options import TrainOptions

log = logging.getLogger("sigerlm.train")


def lr_at(step: int, o: TrainOptions) -> float:
    """Linear warm-up to ``lr``, then cosine down to ``lr * min_lr_ratio`` at ``max_steps``."""
    if o.warmup_steps and step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    span = max(1, o.max_steps - o.warmup_steps)
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
                raise RuntimeError("the training dataset yields no batches") from None
            self.epoch, self.index = self.epoch + 1, 0
            self._start()
            batch = next(self._it)  # type: ignore[arg-type]
        self.index += 1
        return batch

    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}


def _tokens(batch: dict[str, Any]) -> int:
    labels = batch.get("labels")
    if labels is not None:
        return int((labels != -100).sum())
    return int(batch["input_ids"].numel())


def _to(batch: dict[str, Any], device: Any) -> dict[str, Any]:
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}


def _label_ids(batch: dict[str, Any]) -> Any:
    import torch

    labels = batch.get("labels")
    if labels is None:
        labels = batch["input_ids"][:, 1:]
    return labels[labels != -100].flatten().to(torch.long)


def unigram_perplexity(train: Any, valid: Any, vocab: int, batches: int) -> float:
    """Perplexity of the validation labels under add-one unigram counts from the training data."""
    import torch

    counts = torch.ones(vocab, dtype=torch.float64)
    for i, batch in enumerate(train):
        if i >= batches * 4:
            break
        counts += torch.bincount(_label_ids(batch), minlength=vocab)[:vocab].double()
    logp = torch.log(counts / counts.sum())
    total, n = 0.0, 0
    for i, batch in enumerate(valid):
        if i >= batches:
            break
        ids = _label_ids(batch)
        total -= float(logp[ids.clamp(max=vocab - 1)].sum())
        n += ids.numel()
    return math.exp(total / max(n, 1))


def evaluate(model: Any, dataset: Any, batches: int, device: Any) -> dict[str, float]:
    import torch

    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for i, batch in enumerate(dataset):
            if i >= batches:
                break
            n = _tokens(batch)
            total += float(model(_to(batch, device)).detach()) * n
            tokens += n
    model.train(was_training)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # every rank evaluated its own shard
        summed = torch.tensor([total, tokens], dtype=torch.float64)
        dist.all_reduce(summed)
        total, tokens = float(summed[0]), int(summed[1])
    loss = total / max(tokens, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50)), "tokens": tokens}


def _distributed() -> tuple[Any, int, int]:
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        import torch

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist if world > 1 else None), int(os.environ.get("RANK", "0")), world


def train(run: Any, **options: Any) -> dict[str, Any]:
    """The train step's factory: trains, checkpoints, evaluates, saves; returns the summary."""
    import numpy as np
    import torch

    from sigerlm.io import atomic_write
    from sigerlm.model.assembled import build_model
    from sigerlm.training import checkpoints

    o = TrainOptions(**options)
    dist, rank, world = _distributed()
    if o.threads:
        torch.set_num_threads(o.threads)
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if o.device == "cuda" else o.device)
    torch.manual_seed(run.seed)
    np.random.seed(run.seed)
    model = build_model(run).to(device)
    model.train()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("parameters: %d trainable of %d (%.2f%%)", trainable, total, 100 * trainable / max(total, 1))
    optimizer = torch.optim.AdamW(param_groups(model, o.weight_decay), lr=o.lr, betas=o.betas)
    ckpt_dir = run.out_dir / "checkpoints"
    metrics_path = run.out_dir / "metrics.jsonl"
    start_step, position, history = 0, {"epoch": 0, "index": 0}, []
    if run.resume:
        found = checkpoints.latest(ckpt_dir)
        if found is not None:
            saved = checkpoints.load(found, model, optimizer)
            start_step, position = saved["step"], saved["extra"]["data"]
            log.info("resumed from %s (step %d)", found, start_step)
            if metrics_path.exists():
                history = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
                history = [h for h in history if h.get("step", 0) <= start_step]
    ddp_model = model
    if dist is not None:
        from torch.nn.parallel import DistributedDataParallel

        ddp_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    train_data = run.dataset(o.train_split)
    valid_data = run.dataset(o.valid_split) if o.valid_split and o.valid_split in run.manifest.data else None
    batches = Batches(train_data, position["epoch"], position["index"])
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(o.autocast)
    scaler = torch.amp.GradScaler("cuda") if amp is torch.float16 and device.type == "cuda" else None
    if run.is_main:
        lines = "".join(json.dumps(h) + "\n" for h in history)
        atomic_write(metrics_path, lines)
    metrics_file = open(metrics_path, "a", encoding="utf-8") if run.is_main else None
    evals: list[dict[str, Any]] = [h for h in history if "valid_loss" in h]
    progress = _progress(o, run, start_step)
    started, tokens_seen = time.perf_counter(), 0
    last: dict[str, Any] = {}
    try:
        for step in range(start_step, o.max_steps):
            lr = lr_at(step, o)
            for group in optimizer.param_groups:
                group["lr"] = lr
            step_start, step_loss, step_tokens = time.perf_counter(), 0.0, 0
            for micro in range(o.grad_accum):
                batch = _to(next(batches), device)
                sync = dist is None or micro == o.grad_accum - 1
                context = ddp_model.no_sync() if not sync else contextlib.nullcontext()
                with context, torch.autocast(device.type, dtype=amp, enabled=amp is not None and device.type == "cuda"):
                    loss = ddp_model(batch) / o.grad_accum
                (scaler.scale(loss) if scaler else loss).backward()
                step_loss += float(loss.detach())
                step_tokens += _tokens(batch)
            if scaler:
                scaler.unscale_(optimizer)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip or float("inf")))
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if dist is not None:
                reduced = torch.tensor([step_loss, step_tokens], dtype=torch.float64)
                dist.all_reduce(reduced)
                step_loss, step_tokens = float(reduced[0]) / world, int(reduced[1])
            elapsed = time.perf_counter() - step_start
            tokens_seen += step_tokens
            last = {
                "step": step + 1,
                "loss": step_loss,
                "lr": lr,
                "grad_norm": grad_norm,
                "tokens": step_tokens,
                "tokens_per_s": step_tokens / elapsed,
                "elapsed": round(time.perf_counter() - started, 3),
            }
            done = step + 1 == o.max_steps
            if valid_data is not None and (done or (o.eval_every and (step + 1) % o.eval_every == 0)):
                result = evaluate(model, valid_data, o.eval_batches, device)
                last.update(valid_loss=result["loss"], valid_perplexity=result["perplexity"])
                evals.append(last)
            if metrics_file is not None:
                metrics_file.write(json.dumps(last) + "\n")
                metrics_file.flush()
            if progress is not None:
                progress.update(last)
            if run.is_main and (done or (o.checkpoint_every and (step + 1) % o.checkpoint_every == 0)):
                checkpoints.save(ckpt_dir, step + 1, model, optimizer, {"data": batches.position()}, o.keep_checkpoints)
    finally:
        if progress is not None:
            progress.close()
        if metrics_file is not None:
            metrics_file.close()

    summary: dict[str, Any] = {
        "steps": o.max_steps,
        "final_loss": last.get("loss"),
        "trainable_parameters": trainable,
        "parameters": total,
    }
    if evals:
        summary.update(valid_loss=evals[-1]["valid_loss"], valid_perplexity=evals[-1]["valid_perplexity"])
        vocab = getattr(model.adapter, "vocab_size", None)
        if o.baseline == "unigram" and vocab and valid_data is not None:
            summary["unigram_perplexity"] = unigram_perplexity(
                run.dataset(o.train_split), valid_data, vocab, o.eval_batches
            )
    if run.is_main:
        if o.save_model:
            folder = model.save(run.out_dir / o.save_model, run.state.get("tokenizer"), _plugin_versions(run))
            summary["model"] = str(folder)
        if o.plot:
            summary["plot"] = str(_plot(metrics_path, run.out_dir / "loss.png"))
    tokens_per_s = tokens_seen / max(time.perf_counter() - started, 1e-9)
    summary["tokens_per_s"] = tokens_per_s
    run.state["model"] = model.eval()  # for later steps (evaluation) of the same run
    text = (
        f"trained {o.max_steps} steps: loss {summary['final_loss']:.4f}"
        if summary["final_loss"] is not None
        else "nothing to train"
    )
    if "valid_perplexity" in summary:
        text += f", valid perplexity {summary['valid_perplexity']:.2f}"
        if "unigram_perplexity" in summary:
            text += f" (unigram baseline {summary['unigram_perplexity']:.2f})"
    log.info("%s, %.0f tokens/s", text, tokens_per_s)
    return summary


def _plugin_versions(run: Any) -> dict[str, str]:
    return {r.name: r.version or "" for r in run.plugin_manager.plugin_records() if r.loaded}


class _Progress:
    def __init__(self, total: int, start: int):
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("train"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[tps]} tok/s"),
            TimeRemainingColumn(),
            transient=False,
        )
        self._task = self._progress.add_task("train", total=total, completed=start, loss="-", tps="-")
        self._progress.start()

    def update(self, metrics: dict[str, Any]) -> None:
        self._progress.update(
            self._task, completed=metrics["step"], loss=f"{metrics['loss']:.4f}", tps=f"{metrics['tokens_per_s']:.0f}"
        )

    def close(self) -> None:
        self._progress.stop()


def _progress(o: TrainOptions, run: Any, start: int) -> _Progress | None:
    return _Progress(o.max_steps, start) if o.progress and run.is_main else None


def _plot(metrics_path: Path, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label="train loss", linewidth=1)
    valid = [r for r in rows if "valid_loss" in r]
    if valid:
        ax.plot([r["step"] for r in valid], [r["valid_loss"] for r in valid], "o-", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)
    return out
