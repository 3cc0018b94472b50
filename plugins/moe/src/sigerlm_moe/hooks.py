"""Hook implementations of sigerlm-moe (entry point ``moe``).

Keep this module light: every ``siger`` call imports it. torch is imported by the factories.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sigerlm import hookimpl


class MoEOptions(BaseModel):
    """The ``moe`` block: the ``ssm`` block plus a sparse expert branch on chosen layers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    n_experts: int = Field(8, ge=2, le=256, description="Experts per MoE layer (moe_num_experts).")
    top_k: int = Field(2, ge=1, description="Experts per token (moe_top_k); at most n_experts.")
    moe_every: int = Field(
        2,
        ge=1,
        description="The branch is on layers moe_every-1, 2*moe_every-1, ... of the layers using this block "
        "(moe_layers_every); 1: on every such layer (use 1 when model.blocks already places the block).",
    )
    moe_layers: list[int] | None = Field(
        None, description="Explicit layer indices with the branch (instead of moe_every)."
    )
    expert: Literal["swiglu", "gelu"] = Field("swiglu", description="The experts' feed-forward kind.")
    d_expert: int | None = Field(None, ge=1, description="An expert's hidden width; default d_model.")
    capacity_factor: float | None = Field(
        None, gt=0, description="In training, each expert takes at most ceil(cf * tokens * top_k / n_experts)."
    )
    aux_loss_weight: float = Field(0.01, ge=0, description="moe_aux_loss_weight: loss += weight * mean(moe_aux).")
    balance_weight: float = Field(1.0, ge=0, description="The Switch load-balance term's share of moe_aux.")
    importance_weight: float = Field(1.0, ge=0, description="The importance (CV^2) term's share of moe_aux.")
    jitter: float = Field(0.01, ge=0, lt=1, description="Multiplicative router-input jitter in training only.")
    dropout: float | None = Field(None, ge=0, lt=1, description="After the branch; default the config's dropout.")
    dispatch: Literal["grouped", "masked"] = Field(
        "grouped", description="grouped (fast: each expert on its own tokens) or masked (the dense reference)."
    )
    layer_metrics: bool = Field(False, description="Also report moe_dead_layer<i> for every MoE layer.")

    @model_validator(mode="after")
    def _check(self) -> MoEOptions:
        if self.top_k > self.n_experts:
            raise ValueError(f"top_k ({self.top_k}) must not exceed n_experts ({self.n_experts})")
        if self.moe_layers is not None and (not self.moe_layers or any(i < 0 for i in self.moe_layers)):
            raise ValueError(f"moe_layers must list layer indices >= 0, got {self.moe_layers}")
        return self


def moe_block(config: Any, layer_idx: int, options: MoEOptions) -> Any:
    """The SSM block with a sparse mixture-of-experts branch on the chosen layers."""
    from sigerlm_moe.block import MoEBlock

    return MoEBlock(config, layer_idx, options)


@hookimpl
def register_blocks(register):
    register("moe", moe_block, options=MoEOptions)


class StageOptions(BaseModel):
    """``stage``: train one model in ``stages/<name>`` of the run folder (a run of its own)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="The stage's folder: stages/<name>.")
    model: dict[str, Any] = Field(description="The stage's model section (profile, init_from, block, adapter, ...).")
    train: dict[str, Any] = Field(default_factory=dict, description="Options of the stage's train step.")
    data: dict[str, Any] | None = Field(None, description="The stage's data section; default: the manifest's.")
    sizing: bool = Field(False, description="Put the moe-resolve decision into model.block (default block moe).")


class GateOptions(BaseModel):
    """``gate``: every condition given must hold on the stage's metrics."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    stage: str = Field(description="The stage whose metrics are checked (stages/<stage>/metrics.jsonl).")
    min_steps: int | None = Field(None, ge=1, description="At least this many optimizer steps.")
    max_valid_loss: float | None = Field(None, description="The latest validation loss at most this.")
    max_loss_delta: float | None = Field(None, description="Latest valid loss minus the `against` stage's, at most.")
    against: str | None = Field(None, description="The stage max_loss_delta compares with.")
    plateau_window: int | None = Field(None, ge=1, description="Pass once the last N evaluations gained little.")
    plateau_delta: float = Field(0.01, ge=0, description="'Little': the loss fell less than this over the window.")
    on_fail: Literal["error", "warn"] = Field("error", description="error: the run fails; warn: log and go on.")


class HardwareOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    cpu_cores: int = Field(ge=1)
    ram_gb: float = Field(gt=0)
    cuda_memory_gb: list[float] = Field(default_factory=list, description="One entry per CUDA device.")


class ResolveOptions(BaseModel):
    """``moe-resolve``: adaptive expert sizing at a stage boundary."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    stage: str | None = Field(None, description="The dense stage whose validation losses steer the size.")
    adaptive: bool = Field(True, description="false: use `static` whatever the hardware and losses.")
    static: tuple[int, int, int] = Field((8, 2, 2), description="n_experts, top_k, moe_every when not adaptive.")
    min_experts: int = Field(2, ge=2)
    max_experts: int = Field(16, ge=2)
    unstable_loss: float = Field(6.0, description="A dense valid loss above this is unstable: shrink.")
    mature_loss: float = Field(3.5, description="Below this it is mature: more experts.")
    d_model: int = Field(384, ge=1, description="The MoE model's width (for the memory bound).")
    n_layers: int = Field(10, ge=1, description="The MoE model's layers (for the memory bound).")
    d_expert: int | None = Field(None, ge=1)
    hardware: HardwareOptions | None = Field(None, description="Simulated hardware; default: this machine's.")

    @model_validator(mode="after")
    def _check(self) -> ResolveOptions:
        if self.min_experts > self.max_experts:
            raise ValueError(f"min_experts ({self.min_experts}) exceeds max_experts ({self.max_experts})")
        n, k, every = self.static
        if not (2 <= n and 1 <= k <= n and every >= 1):
            raise ValueError(f"static must be (n_experts >= 2, 1 <= top_k <= n_experts, moe_every >= 1): {self.static}")
        return self


def stage_step(run: Any, options: StageOptions) -> Any:
    """Train one model of a staged pipeline in its own run folder (stages/<name>)."""
    from sigerlm_moe.steps import stage

    return stage(run, options)


def gate_step(run: Any, options: GateOptions) -> Any:
    """Pass or fail on a stage's steps, validation loss, loss delta or plateau."""
    from sigerlm_moe.steps import gate

    return gate(run, options)


def resolve_step(run: Any, options: ResolveOptions) -> Any:
    """Pick n_experts, top_k and moe_every from the hardware and the dense stage's loss."""
    from sigerlm_moe.steps import moe_resolve

    return moe_resolve(run, options)


@hookimpl
def register_steps(register):
    register("stage", stage_step, options=StageOptions)
    register("gate", gate_step, options=GateOptions)
    register("moe-resolve", resolve_step, options=ResolveOptions)
