"""Hook implementations of sigerlm-eval (entry point ``eval``).

Keep this module light: every ``siger`` call imports it. The evaluators import torch, sacrebleu
and rouge-score inside their factories. Every evaluator is ``factory(run, options) -> {metric:
number}`` and evaluates ``sigerlm.assemble.current_model(run)``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sigerlm import hookimpl
from sigerlm.manifest import InputPath, component_ref

DatasetSpec = component_ref("datasets")


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PerplexityOptions(_Options):
    files: list[InputPath] = Field(
        default_factory=list, description="Text files (one document each) or JSONL files (one document a row)."
    )
    field: str = Field("text", description="The JSONL field that holds a document.")
    dataset: DatasetSpec | None = Field(
        None, description="Instead of files: any dataset component; the adapter's loss, token-weighted (any modality)."
    )
    batches: int | None = Field(None, ge=1, description="With dataset: at most this many batches.")
    mode: Literal["stateful", "windowed"] = Field(
        "stateful",
        description="stateful: each document in one pass, the state carried across chunks (exact, constant memory); "
        "windowed: fresh windows of `window` tokens every `stride` tokens (what transformers do).",
    )
    chunk: int = Field(1024, ge=1, description="stateful: positions scored at a time (bounds memory).")
    window: int | None = Field(None, ge=2, description="windowed: window length; default the model's max_seq_len.")
    stride: int | None = Field(None, ge=1, description="windowed: tokens between window starts; default window / 2.")
    limit: int | None = Field(None, ge=1, description="At most this many documents.")
    runtime: str = Field("torch", description="The registered runtime that scores (its score, else its step).")

    @model_validator(mode="after")
    def _one_source(self) -> PerplexityOptions:
        if bool(self.files) == (self.dataset is not None):
            raise ValueError("give either files or dataset (exactly one)")
        return self


class GenerationOptions(_Options):
    runtime: str = Field("torch", description="The registered runtime that decodes (torch, onnxruntime, ...).")
    max_new_tokens: int = Field(64, ge=1)
    batch_size: int = Field(8, ge=1, description="Prompts decoded together.")
    chat: bool = Field(True, description="Wrap prompts in the chat template (a user turn, the assistant's opened).")
    limit: int | None = Field(None, ge=1, description="At most this many rows.")


class InstructionTemplate(_Options):
    instruction: str = Field(description="Format string over the row's fields, e.g. 'Terjemahkan: {lampung}'.")
    input: str = ""
    output: str = Field(description="The reference, e.g. '{indonesian}'.")
    system: str = ""


class ReferenceOptions(GenerationOptions):
    files: list[InputPath] = Field(
        min_length=1, description="JSONL: {instruction, input?, output} rows, or any shape with `template`."
    )
    template: InstructionTemplate | None = Field(
        None, description="How a row becomes a prompt and its reference (pair files); default the instruction shape."
    )


class ChrfOptions(ReferenceOptions):
    word_order: int = Field(2, ge=0, le=2, description="2: chrF++ (default), 0: chrF.")


class DiversityOptions(GenerationOptions):
    files: list[InputPath] = Field(
        default_factory=list, description="JSONL rows with `field` as the prompt, or text files (a prompt a line)."
    )
    prompts: list[str] = Field(default_factory=list, description="Prompts given inline.")
    field: str = Field("prompt", description="The JSONL field that holds the prompt.")
    samples: int = Field(4, ge=1, description="Generations sampled per prompt.")
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(0.95, gt=0, le=1)
    seed: int = 0

    @model_validator(mode="after")
    def _some_prompts(self) -> DiversityOptions:
        if not self.files and not self.prompts:
            raise ValueError("give files or prompts")
        return self


class MultipleChoiceOptions(_Options):
    files: list[InputPath] = Field(min_length=1, description="JSONL items.")
    template: Literal["plain", "copa", "arc", "mmlu"] = Field(
        "plain",
        description="plain: {context, choices, label}; copa: {premise, question: cause|effect, choice1, choice2, "
        "label}; arc: {question, choices, answer} scored on the choice texts; mmlu: the same scored on lettered "
        "choices (A, B, ...).",
    )
    connectives: dict[str, str] = Field(
        default_factory=lambda: {"cause": "karena", "effect": "sehingga"},
        description="copa: the word joining premise and choice, by question.",
    )
    question_prefix: str = Field("Pertanyaan:", description="arc/mmlu: before the question.")
    answer_prefix: str = Field("Jawaban:", description="arc/mmlu: after the choices; the choice follows it.")
    batch_size: int = Field(16, ge=1, description="Items whose choices are scored together.")
    runtime: str = Field("torch", description="The registered runtime that prefills the contexts.")
    limit: int | None = Field(None, ge=1)


class GenerationChecksOptions(GenerationOptions):
    files: list[InputPath] = Field(
        min_length=1,
        description="JSONL rows {id, prompt, min_chars?, expected_contains?, expected_not_contains?, "
        "max_repetition_ratio?} (the harness fixtures in <data>/general/harness).",
    )


class EvaluateOptions(_Options):
    evaluators: list[dict[str, Any]] = Field(
        min_length=1, description="Evaluators to run, each {use: NAME, name?: LABEL, ...options}."
    )
    out: str = Field("eval", description="Writes <out>.json and <out>.md in the run folder.")


def perplexity(run, options: PerplexityOptions):
    """Per-document perplexity and bits per byte (state carried across chunks, or windowed)."""
    from sigerlm_eval.perplexity import evaluate

    return evaluate(run, options)


def bleu(run, options: ReferenceOptions):
    """Corpus BLEU (sacrebleu) of greedy answers against references."""
    from sigerlm_eval.reference import evaluate

    return evaluate(run, options, "bleu")


def chrf(run, options: ChrfOptions):
    """Corpus chrF++ (word_order 2) or chrF (0) (sacrebleu) of greedy answers against references."""
    from sigerlm_eval.reference import evaluate

    return evaluate(run, options, "chrf")


def rouge(run, options: ReferenceOptions):
    """ROUGE-1/2/L F1 (rouge-score) of greedy answers against references."""
    from sigerlm_eval.reference import evaluate

    return evaluate(run, options, "rouge")


def diversity(run, options: DiversityOptions):
    """distinct-1/2/3, repetition rate and self-BLEU of sampled generations."""
    from sigerlm_eval.diversity import evaluate

    return evaluate(run, options)


def multiple_choice(run, options: MultipleChoiceOptions):
    """Log-likelihood of each choice after its context: acc, acc_norm (per character), acc_per_token."""
    from sigerlm_eval.choice import evaluate

    return evaluate(run, options)


def generation_checks(run, options: GenerationChecksOptions):
    """Greedy answers checked for length, required and forbidden text, and repetition."""
    from sigerlm_eval.checks import evaluate

    return evaluate(run, options)


def evaluate_step(run, options: EvaluateOptions):
    """Run evaluators on the run's current model; writes <out>.json and <out>.md."""
    from sigerlm_eval.task import evaluate_step as step

    return step(run, options)


@hookimpl
def register_evaluators(register):
    register("perplexity", perplexity, options=PerplexityOptions)
    register("bleu", bleu, options=ReferenceOptions)
    register("chrf", chrf, options=ChrfOptions)
    register("rouge", rouge, options=ReferenceOptions)
    register("diversity", diversity, options=DiversityOptions)
    register("multiple-choice", multiple_choice, options=MultipleChoiceOptions)
    register("generation-checks", generation_checks, options=GenerationChecksOptions)


@hookimpl
def register_steps(register):
    register("evaluate", evaluate_step, options=EvaluateOptions)


@hookimpl
def register_commands(cli):
    from sigerlm_eval.cli import eval_command

    cli.command("eval")(eval_command)
