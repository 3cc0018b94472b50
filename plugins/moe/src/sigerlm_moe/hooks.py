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
