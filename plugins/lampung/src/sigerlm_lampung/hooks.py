"""Hook implementations of sigerlm-lampung (entry point ``lampung``).

Keep this module light: it is imported by every ``siger`` call. Commands, datasets, chat
commands and routes import their modules inside the functions. ``register_chat_commands``
(declared by sigerlm-text) and ``register_routes`` (declared by sigerlm-serving) are optional
hooks: the plugin loads without those plugins.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sigerlm import hookimpl
from sigerlm_text.hooks import TokenizerSpec, tokenizer_shorthand


class LampungParallelOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    split: Literal["train", "valid"] = Field("train", description="Which split of <data>/lampung/splits to read.")
    directions: list[Literal["abl-ind", "ind-abl", "abl-eng", "eng-abl"]] = Field(
        default_factory=lambda: ["abl-ind", "ind-abl", "abl-eng", "eng-abl"],
        min_length=1,
        description="Translation directions to build instruction rows for.",
    )
    data_dir: str | None = Field(None, description="Data folder (default: $SIGER_DATA_DIR or ../shared/data).")
    tokenizer: TokenizerSpec | None = Field(
        None, description="A tokenizer component, or a trained tokenizer.json (or its folder); default: the run's."
    )
    seq_len: int | None = Field(None, ge=1, description="Tokens per example; default: the model's max_seq_len.")
    batch_size: int = Field(8, ge=1)
    shuffle: bool = True

    _shorthand = field_validator("tokenizer", mode="before")(tokenizer_shorthand)


def lampung_parallel(run, options: LampungParallelOptions):
    """Lampung pairs (quality flags honoured, deduplicated) as instruction rows for every direction,
    rendered with sigerlm-text's chat template; loss on the translation."""
    from sigerlm_lampung.datasets import lampung_parallel as build

    o = options
    return build(run, o.split, o.directions, o.data_dir, o.tokenizer, o.seq_len, o.batch_size, o.shuffle)


class LampungTranslationOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    split: Literal["train", "valid"] = Field("valid", description="The split to score (system built from train).")
    file: str | None = Field(None, description="Score this pair file instead (system built from train + valid).")
    data_dir: str | None = Field(None, description="Data folder (default: $SIGER_DATA_DIR or ../shared/data).")
    english: bool = Field(True, description="Also score abl<->eng where the pairs have English.")
    folds: int = Field(0, ge=0, description="k-fold cross-validation over the human-written pairs (0: none).")
    seed: int = Field(0, ge=0)
    limit: int | None = Field(None, ge=1, description="Score at most this many pairs.")
    model_fallback: bool = Field(
        False, description="Let the run's model answer low-confidence texts (the model being evaluated)."
    )
    runtime: str = Field("torch", description="The runtime that decodes the model fallback.")


def lampung_translation(run, options: LampungTranslationOptions):
    """chrF++, BLEU, exact match and coverage of the Lampung translator per direction, next to a
    word-by-word baseline (and the model fallback when asked), as ``siger lampung eval`` scores."""
    from sigerlm_lampung.evaluate import evaluator_metrics

    return evaluator_metrics(run, options)


@hookimpl
def register_evaluators(register):
    register("lampung-translation", lampung_translation, options=LampungTranslationOptions)


@hookimpl
def register_datasets(register):
    register("lampung-parallel", lampung_parallel, options=LampungParallelOptions)


@hookimpl
def register_commands(cli):
    from sigerlm_lampung.cli import app

    cli.add_typer(app, name="lampung")


@hookimpl(optionalhook=True)
def register_chat_commands(register):
    from sigerlm_lampung.chat import register_all

    register_all(register)


@hookimpl(optionalhook=True)
def route_chat_message(session, message):
    """``siger chat`` routes plain messages here first: Lampung input and translation requests
    are translated; anything else returns None and goes to the model."""
    from sigerlm_lampung.chat import route_message

    return route_message(session, message)


@hookimpl(optionalhook=True)
def register_routes(router, app_state):
    from sigerlm_lampung.routes import add_routes

    add_routes(router, app_state)
