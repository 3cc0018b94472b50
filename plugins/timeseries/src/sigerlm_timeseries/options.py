"""Options of the evaluators and the evaluation step: read by the hooks module (light: pydantic
only) and by ``sigerlm_timeseries.evaluate``, which therefore need not import the hooks module."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ClassificationEvalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    split: str = Field("test", description="The data split (under data:) to score.")
    prefixes: list[float] = Field(
        default_factory=lambda: [0.1, 0.25, 0.5, 1.0], description="Fractions of each series for prefix accuracy."
    )
    batches: int | None = Field(None, ge=1, description="Score at most this many batches.")


class ForecastEvalOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    split: str = "test"
    season: int = Field(1, ge=1, description="The season m of MASE's scale and of the seasonal-naive baseline.")
    batches: int | None = Field(None, ge=1)


class EvaluateStepOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    split: str = "test"
    prefixes: list[float] = Field(default_factory=lambda: [0.1, 0.25, 0.5, 1.0])
    season: int = Field(1, ge=1)
