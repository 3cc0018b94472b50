"""Hook implementations of sigerlm-timeseries (entry point ``timeseries``).

Only hooks, options models and light imports live here: every ``siger`` call imports this
module. torch, numpy and the plugin's work are imported inside the factories.

- adapter ``series``: ``(b, l, channels)`` floats with a missing-value mask -> ``inputs_embeds``,
  heads ``classify`` and ``forecast``;
- datasets ``ucr`` (a ``.ts`` file, a pair, or an aeon-bundled dataset) and ``csv`` (windows);
- evaluators ``series-classification`` and ``series-forecast``; step ``series-evaluate``;
- commands ``siger timeseries stream|predict``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sigerlm import hookimpl
from sigerlm_timeseries.options import ClassificationEvalOptions, EvaluateStepOptions, ForecastEvalOptions


class SeriesOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    channels: int = Field(1, ge=1, description="Values per time step (6 for accelerometer + gyroscope).")
    head: Literal["classify", "forecast"] = "classify"
    classes: list[str] = Field(
        default_factory=list,
        description="classify: the class names, in the order of the outputs (in config.json); default: the training "
        "data's (a ucr file's @classLabel).",
    )
    horizon: int = Field(1, ge=1, description="forecast: how many future steps per channel.")
    patch: int = Field(1, ge=1, description="Steps per embedded position: 1 is a per-step linear embedding.")
    norm: Literal["instance", "causal", "none"] = Field(
        "instance",
        description="Per-instance normalisation per channel: over the whole input (instance), over the prefix up to "
        "each step (causal: streaming equals the full forward), or none. Forecasts return in the original scale.",
    )
    readout: Literal["mean", "last"] = Field(
        "mean", description="classify: the mean of the logits over the positions, or the logits at the last one."
    )
    loss: Literal["mse", "mae"] = Field("mse", description="forecast: the loss on normalised values.")
    forecast_positions: Literal["all", "last"] = Field(
        "all", description="forecast: train every position to predict its next `horizon` steps, or only the last."
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    season: int | None = Field(
        None,
        ge=1,
        description="forecast: the model learns a correction to the seasonal-naive forecast (each future step's "
        "value one season earlier), starting from it: its readout starts at zero.",
    )

    @model_validator(mode="after")
    def _check_head(self) -> SeriesOptions:
        if self.season is not None and self.head != "forecast":
            raise ValueError("season is an option of head 'forecast'")
        if self.head == "classify":
            if len(self.classes) == 1:
                raise ValueError("head 'classify' needs at least 2 classes (or none: the training data's)")
            if len(set(self.classes)) != len(self.classes):
                raise ValueError(f"classes must be distinct, got {self.classes}")
        return self


class UcrOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="A dataset bundled inside the aeon package (GunPoint, BasicMotions...).")
    path: str | None = Field(
        None, description="A .ts file, or a folder/prefix with NAME_TRAIN.ts and NAME_TEST.ts (then split picks one)."
    )
    split: Literal["train", "test"] = "train"
    batch_size: int = Field(16, ge=1)
    shuffle: bool | None = Field(None, description="Default: shuffle the train split only.")
    classes: list[str] | None = Field(None, description="Label order; default: the model's classes, else the file's.")
    limit: int | None = Field(None, ge=1, description="Use only the first N series (for quick runs).")
    jitter: float = Field(0.0, ge=0, description="Train-time Gaussian noise, as a fraction of each series' std.")
    prefixes: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Train split: the share of series cut to a random prefix each epoch (early classification).",
    )
    min_prefix: float = Field(0.1, gt=0, le=1, description="The shortest prefix, as a fraction of the series.")

    @model_validator(mode="after")
    def _one_source(self) -> UcrOptions:
        if (self.name is None) == (self.path is None):
            raise ValueError("give exactly one of name (an aeon-bundled dataset) or path (a .ts file or pair)")
        return self


class CsvOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(None, description="A CSV file: a header line, then one row per step.")
    name: str | None = Field(None, description="A series bundled inside the aeon package (Airline, solar...).")
    columns: list[str] | None = Field(None, description="Columns to use; default: every numeric column.")
    window: int = Field(ge=1, description="Context steps of each example.")
    horizon: int = Field(1, ge=1, description="Future steps to forecast.")
    stride: int = Field(1, ge=1, description="Steps between training windows.")
    holdout: int = Field(0, ge=0, description="The last N steps are the test part (split: test).")
    split: Literal["train", "test", "all"] = "train"
    batch_size: int = Field(16, ge=1)
    shuffle: bool | None = Field(None, description="Default: shuffle the train split only.")

    @model_validator(mode="after")
    def _one_source(self) -> CsvOptions:
        if (self.name is None) == (self.path is None):
            raise ValueError("give exactly one of name (an aeon-bundled series) or path (a CSV file)")
        return self


@hookimpl
def register_adapters(register):
    register("series", build_series, options=SeriesOptions, description="time series: classify or forecast")


@hookimpl
def register_datasets(register):
    register("ucr", ucr_dataset, options=UcrOptions, description="UCR/UEA .ts classification data")
    register("csv", csv_dataset, options=CsvOptions, description="windows of a CSV file for forecasting")


@hookimpl
def register_evaluators(register):
    register("series-classification", classification_evaluator, options=ClassificationEvalOptions)
    register("series-forecast", forecast_evaluator, options=ForecastEvalOptions)


@hookimpl
def register_steps(register):
    register("series-evaluate", evaluate_step, options=EvaluateStepOptions)


@hookimpl
def register_commands(cli):
    from sigerlm_timeseries.cli import app

    cli.add_typer(app, name="timeseries")


@hookimpl
def prepare_model(run, model):
    """A classifier whose manifest names no classes takes the training data's."""
    adapter = getattr(model, "adapter", None)
    options = getattr(adapter, "options", None)
    if not isinstance(options, SeriesOptions) or options.head != "classify" or options.classes:
        return
    from sigerlm.errors import SigerError

    for split in sorted(run.manifest.data, key=lambda s: s != "train"):  # the train split first
        names = getattr(run.dataset(split), "class_names", None)
        if names:
            if len(names) < 2:
                raise SigerError(f"data.{split} declares {len(names)} class ({names}): a classifier needs 2 or more")
            adapter.set_classes(names)
            model.spec["adapter"]["classes"] = list(names)  # saved in the model folder's config.json
            run.state["series_classes"] = list(names)  # every split's labels in this order
            run.logger.info("classes from data.%s: %s", split, ", ".join(names))
            return
    raise SigerError(
        "the series classifier has no classes: give model.adapter.classes, or a ucr dataset whose file declares "
        "@classLabel"
    )


def build_series(config, options: SeriesOptions):
    from sigerlm_timeseries.adapter import SeriesAdapter

    return SeriesAdapter(config, options)


def ucr_dataset(run, options: UcrOptions):
    from sigerlm_timeseries.data import ucr_for_run

    return ucr_for_run(run, options)


def csv_dataset(run, options: CsvOptions):
    from sigerlm_timeseries.data import csv_for_run

    return csv_for_run(run, options)


def classification_evaluator(run, options: ClassificationEvalOptions):
    from sigerlm_timeseries.evaluate import evaluate_classification

    return evaluate_classification(run, options)


def forecast_evaluator(run, options: ForecastEvalOptions):
    from sigerlm_timeseries.evaluate import evaluate_forecast

    return evaluate_forecast(run, options)


def evaluate_step(run, options: EvaluateStepOptions):
    from sigerlm_timeseries.evaluate import evaluate_step as step

    return step(run, options)
