"""Options of the ``train`` step (torch-free, so manifests validate without torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sigerlm.manifest.schema import OutputPath


class TrainOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_steps: int = Field(ge=1, description="Optimizer steps (the most; max_minutes may end training sooner).")
    max_minutes: float | None = Field(
        None,
        gt=0,
        description="A time budget: the first steps are timed and the learning-rate schedule is fitted to the steps "
        "that fit; training ends at max_steps or at the budget, whichever comes first.",
    )
    lr: float = Field(3e-4, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="The cosine schedule's floor, as a fraction of lr.")
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    grad_accum: int = Field(1, ge=1, description="Batches per optimizer step.")
    grad_clip: float | None = Field(1.0, gt=0)
    train_split: str = "train"
    valid_split: str | None = Field("valid", description="Evaluated when the manifest has this split.")
    eval_every: int | None = Field(None, ge=1, description="Steps between evaluations (always at the end).")
    eval_batches: int = Field(50, ge=1)
    baseline: Literal["adapter", "unigram", "none"] = Field(
        "adapter", description="Report the adapter's baseline (unigram perplexity for text; 'unigram' is its old name)."
    )
    checkpoint_every: int | None = Field(None, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    save_model: OutputPath | None = Field(
        "model", description="Folder for the final model, relative to the run folder; null: none."
    )
    autocast: Literal["none", "bf16", "fp16"] = Field("none", description="Mixed precision on CUDA.")
    device: str = Field("cpu", description="cpu or cuda (the rank's device under torchrun).")
    threads: int | None = Field(None, ge=1, description="torch threads; default: torch's choice.")
    progress: bool = True
    plot: bool = True
