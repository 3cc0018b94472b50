"""Options of the ``lora`` transform (torch-free, so manifests validate without torch)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from sigerlm.manifest import InputPath

#: Mamba's projections: the input, the state-space parameters (x_proj, dt_proj) and the output.
DEFAULT_TARGETS = ("in_proj", "out_proj", "x_proj", "dt_proj")


class LoraOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rank: int = Field(8, ge=1, description="Rank r of each adapter (A is r x in, B is out x r).")
    alpha: float = Field(16.0, gt=0, description="Scale: the adapter adds alpha / rank * B @ A.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter's input while training.")
    targets: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TARGETS),
        min_length=1,
        description="nn.Linear modules to adapt: a bare name matches the last part of a module's name "
        "(in_proj); a pattern with a dot or wildcard matches the whole name (backbone.layers.0.*).",
    )
    name: str = Field("default", pattern=r"^[A-Za-z0-9_-]+$", description="The adapter's name.")
    adapter: InputPath | None = Field(None, description="An adapter folder to continue tuning (instead of a new one).")
