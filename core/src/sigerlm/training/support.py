"""What the train step leans on: distribution over ranks (DDP under ``torchrun``), mixed
precision, the time budget, ``metrics.jsonl``, the progress bar and the loss plot."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger("sigerlm.train")
#: the per-step numbers every run logs; anything else in a metrics line is a component's metric
STANDARD = ("step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "elapsed", "valid_loss", "valid_perplexity")


class Distributed:
    """One process, or one rank of a ``torchrun`` job (gloo on CPU, nccl on CUDA)."""

    def __init__(self, dist: Any, rank: int, world: int):
        self.dist, self.rank, self.world = dist, rank, world

    @classmethod
    def start(cls) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls(None, 0, 1)
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return cls(dist, int(os.environ.get("RANK", "0")), world)

    def device(self, name: str) -> Any:
        import torch

        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if name == "cuda" else name)

    def wrap(self, model: Any, device: Any) -> Any:
        if self.dist is None:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def sync(self, ddp_model: Any, last_micro_batch: bool) -> Any:
        """Gradients are averaged over ranks only on the last micro-batch of a step."""
        return ddp_model.no_sync() if self.dist is not None and not last_micro_batch else contextlib.nullcontext()

    def reduce(self, values: dict[str, float], mean: Iterable[str] = ()) -> dict[str, float]:
        """Sums over ranks (``mean``: averages) of a dictionary of numbers."""
        if self.dist is None:
            return dict(values)
        import torch

        keys = sorted(values)
        summed = torch.tensor([values[k] for k in keys], dtype=torch.float64)
        self.dist.all_reduce(summed)
        out = dict(zip(keys, summed.tolist(), strict=True))
        for key in mean:
            out[key] /= self.world
        return out


class Precision:
    """Autocast (bf16 or fp16) on CUDA with a gradient scaler for fp16; plain fp32 elsewhere."""

    def __init__(self, autocast: str, device: Any):
        import torch

        self.device = device
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(autocast) if device.type == "cuda" else None
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype is torch.float16 else None

    def autocast(self) -> Any:
        import torch

        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def backward(self, loss: Any) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self, optimizer: Any, model: Any, clip: float | None) -> float:
        """Unscale, clip (returns the gradient norm) and step."""
        import torch

        if self.scaler:
            self.scaler.unscale_(optimizer)
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip or float("inf")))
        if self.scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        return norm


class Budget:
    """``max_steps``, or fewer when ``max_minutes`` runs out first. The steps after the first
    (which may compile kernels and warms caches) are timed; after ``FIT_AFTER`` of them the plan is
    fixed, so the learning-rate schedule ends where training ends. A run that still overruns
    (evaluations, a busier machine) stops at the budget. The plan is saved in checkpoints."""

    FIT_AFTER = 5

    def __init__(self, max_steps: int, max_minutes: float | None, saved: dict[str, Any] | None = None):
        saved = saved or {}
        self.max_steps = max_steps
        self.seconds = max_minutes * 60 if max_minutes else None
        self.steps = int(saved.get("steps", max_steps))
        self.fitted = bool(saved.get("fitted", self.seconds is None))
        self.before = float(saved.get("elapsed", 0.0))
        self.elapsed = self.before
        self._first: float | None = None

    def observe(self, done_here: int, seconds_here: float, step: int) -> None:
        """After each step: ``done_here`` steps in ``seconds_here`` in this process. The first
        step of a process (which may compile the kernels) does not count against the budget."""
        if done_here == 1:
            self._first = seconds_here
        self.elapsed = self.before + seconds_here - (self._first or 0.0)
        if self.seconds is None:
            return
        if not self.fitted and self._first is not None and done_here == 1 + self.FIT_AFTER:
            per_step = (seconds_here - self._first) / self.FIT_AFTER
            fit = step + int(max(0.0, self.seconds - self.elapsed) / max(per_step, 1e-9))
            self.steps, self.fitted = max(step, min(self.max_steps, fit)), True
            log.info(
                "time budget %.1f min: %.3f s a step, training for %d steps", self.seconds / 60, per_step, self.steps
            )
        if self.elapsed >= self.seconds and step < self.steps:
            log.info("time budget of %.1f min reached at step %d", self.seconds / 60, step)
            self.steps = step

    def state(self) -> dict[str, Any]:
        return {"steps": self.steps, "fitted": self.fitted, "elapsed": round(self.elapsed, 3)}

    def ended_by(self, step: int) -> str:
        return "max_minutes" if step < self.max_steps else "max_steps"


class MetricsLog:
    """``metrics.jsonl``: the lines before a resumed step, then one line a step (rank 0 only)."""

    def __init__(self, path: Path, history: list[dict[str, Any]], write: bool):
        from sigerlm.io import atomic_write

        self.file = None
        if write:
            atomic_write(path, "".join(json.dumps(h) + "\n" for h in history))
            self.file = open(path, "a", encoding="utf-8")  # closed by close()

    def write(self, line: dict[str, Any]) -> None:
        if self.file is not None:
            self.file.write(json.dumps(line) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class Progress:
    """A rich progress bar with the loss, tokens per second and every component metric."""

    def __init__(self, total: int, start: int):
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("train"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[tps]} tok/s"),
            TextColumn("{task.fields[extra]}"),
            TimeRemainingColumn(),
            transient=False,
        )
        self._task = self._progress.add_task("train", total=total, completed=start, loss="-", tps="-", extra="")
        self._progress.start()

    def update(self, metrics: dict[str, Any], total: int) -> None:
        extra = " ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k not in STANDARD and isinstance(v, float))
        self._progress.update(
            self._task,
            total=total,
            completed=metrics["step"],
            loss=f"{metrics['loss']:.4f}",
            tps=f"{metrics['tokens_per_s']:.0f}",
            extra=extra,
        )

    def close(self) -> None:
        self._progress.stop()


def plot(metrics_path: Path, out: Path) -> Path:
    """``loss.png``: training and validation loss, and a second panel for component metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    extra = sorted({k for r in rows for k in r if k not in STANDARD and not k.startswith("valid_")})
    fig, axes = plt.subplots(2 if extra else 1, 1, figsize=(7, 6 if extra else 4), dpi=100, squeeze=False)
    ax = axes[0][0]
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label="train loss", linewidth=1)
    valid = [r for r in rows if "valid_loss" in r]
    if valid:
        ax.plot([r["step"] for r in valid], [r["valid_loss"] for r in valid], "o-", label="validation loss")
    ax.set_ylabel("loss")
    for key in extra:
        points = [(r["step"], r[key]) for r in rows if key in r]
        axes[1][0].plot([p[0] for p in points], [p[1] for p in points], label=key, linewidth=1)
    for row in axes:
        row[0].set_xlabel("step")
        row[0].grid(alpha=0.3)
        row[0].legend()
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)
    return out


def plugin_versions(run: Any) -> dict[str, str]:
    return {r.name: r.version or "" for r in run.plugin_manager.plugin_records() if r.loaded}
