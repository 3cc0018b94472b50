"""``siger text ...``: commands of the text plugin."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="Text tools: tokenizers (and, as they land, corpora).", no_args_is_help=True)
tokenizer_app = typer.Typer(help="Train and inspect tokenizers.", no_args_is_help=True)
app.add_typer(tokenizer_app, name="tokenizer")


@tokenizer_app.command("train")
def train(
    data: Annotated[list[Path], typer.Option("--data", help="Text or JSONL files (or folders of them); repeatable.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write tokenizer.json into.")],
    vocab_size: Annotated[int, typer.Option("--vocab-size", help="Vocabulary size, special tokens included.")] = 8000,
    field: Annotated[
        list[str] | None, typer.Option("--field", help="JSONL fields to use (default: every string field).")
    ] = None,
    min_frequency: Annotated[int, typer.Option("--min-frequency")] = 2,
    force: Annotated[bool, typer.Option("--force", help="Write into --out even if it holds files.")] = False,
) -> None:
    """Train a ByteLevel BPE with SigerLM's special tokens at their fixed ids."""
    from sigerlm.io import check_output
    from sigerlm_text.corpus_text import iter_documents
    from sigerlm_text.tokenizers.bpe import BPETokenizer

    check_output(out, force, "--out")  # before the work: never replaces a folder that holds files

    started = time.perf_counter()
    seen = {"documents": 0, "bytes": 0}

    def counted():  # streams the documents to the trainer, counting them on the way
        for document in iter_documents(data, field or ()):
            seen["documents"] += 1
            seen["bytes"] += len(document.encode("utf-8"))
            yield document

    tokenizer = BPETokenizer.train(counted(), vocab_size, min_frequency)
    tokenizer.save(out)
    typer.echo(
        f"trained a BPE of {tokenizer.vocab_size} tokens on {seen['documents']} documents "
        f"({seen['bytes'] / 1e6:.2f} MB) "
        f"in {time.perf_counter() - started:.1f} s: {out / 'tokenizer.json'} (hash {tokenizer.hash[:12]})"
    )


@tokenizer_app.command("encode")
def encode(
    text: str,
    tokenizer_path: Annotated[Path, typer.Option("--tokenizer", help="A tokenizer.json or the folder holding one.")],
) -> None:
    """Show the ids and pieces of a text."""
    from sigerlm_text.tokenizers.bpe import BPETokenizer

    tokenizer = BPETokenizer.load(tokenizer_path)
    ids = tokenizer.encode(text)
    typer.echo(" ".join(str(i) for i in ids))
    typer.echo(" | ".join(tokenizer.decode([i]) for i in ids))


import_app = typer.Typer(
    help="Import models from other formats (hf: a local MambaForCausalLM folder).", no_args_is_help=True
)


@import_app.command("hf")
def import_hf_command(
    source: Annotated[Path, typer.Argument(help="A local transformers MambaForCausalLM folder with tokenizer.json.")],
    out: Annotated[Path, typer.Option("--out", help="The SigerLM model folder to write.")],
    force: Annotated[bool, typer.Option("--force", help="Write into --out even if it holds files.")] = False,
) -> None:
    """Convert a transformers Mamba folder into a SigerLM model folder (init_from, LoRA, serve, export)."""
    from sigerlm.io import check_output
    from sigerlm_text.interop import import_hf

    report = import_hf(source, check_output(out, force, "--out"))
    typer.echo(f"imported {source} -> {out}: {report['parameters']:,} parameters, vocabulary {report['vocab_size']}")
    if report["added"]:
        typer.echo(f"added special tokens the tokenizer lacked: {' '.join(report['added'])}")
    if report["made_special"]:
        typer.echo(f"made special (were ordinary tokens): {' '.join(report['made_special'])}")
    if report["new_rows"]:
        typer.echo(f"{report['new_rows']} new embedding rows (the mean embedding) for tokens beyond the vocabulary")


corpus_app = typer.Typer(help="Build training corpora from dataset configs.", no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")


@corpus_app.command("build")
def corpus_build(
    config: Annotated[Path, typer.Argument(help="Dataset config (YAML or JSON), e.g. registry/datasets/*.yaml.")],
    out: Annotated[Path, typer.Option("--out", help="The corpus (JSONL); the report goes to OUT.report.json.")],
    seed: Annotated[int | None, typer.Option("--seed", help="Override the config's seed.")] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Where relative paths point (default: $SIGER_DATA_DIR or ../shared/data)."),
    ] = None,
    tokenizer: Annotated[
        Path | None, typer.Option("--tokenizer", help="A trained tokenizer.json: count tokens per source.")
    ] = None,
) -> None:
    """Write one shuffled, deduplicated corpus and a report of what went in and what did not."""
    from sigerlm.paths import data_dir as find_data_dir
    from sigerlm_text.corpus import build_corpus, load_config
    from sigerlm_text.tokenizers.bpe import BPETokenizer

    report = build_corpus(
        load_config(config), find_data_dir(data_dir), out, BPETokenizer.load(tokenizer) if tokenizer else None, seed
    )
    for s in report["sources"]:
        capped = " (oversampling capped)" if s["oversampling_capped"] else ""
        tokens = f", {s['tokens']} tokens" if "tokens" in s else ""
        typer.echo(
            f"{s['source']}: read {s['read']}, bad {s['bad']}, empty {s['skipped_empty']}, "
            f"duplicates {s['duplicates']}, over max_rows "
            f"{s['over_max_rows']}, kept {s['kept']}, written {s['written']}{capped}{tokens}"
        )
    for line in report["bad_rows"][:20]:
        typer.echo(f"  bad row: {line}", err=True)
    if len(report["bad_rows"]) > 20:
        typer.echo(f"  ... {len(report['bad_rows']) - 20} more bad rows in {out}.report.json", err=True)
    typer.echo(f"{report['rows']} rows -> {out} (report: {out}.report.json)")


def utf8(text: str, what: str) -> str:
    """``text`` if it is valid UTF-8 (an argument or line with undecodable bytes holds lone
    surrogates); else a clear error naming ``what``."""
    from sigerlm.errors import SigerError

    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SigerError(f"{what} is not valid UTF-8 text (at character {exc.start})") from None
    return text


def read_line(stream: Any, number: int) -> str:
    """One line of standard input; input that is not UTF-8 is a clear error."""
    from sigerlm.errors import SigerError

    try:
        line = stream.readline()
        line.encode("utf-8")  # undecodable bytes arrive as lone surrogates (errors="surrogateescape")
    except (UnicodeDecodeError, UnicodeEncodeError) as exc:
        raise SigerError(f"standard input, line {number}: not valid UTF-8 (at {exc.start})") from None
    return line


def load_generator(model_dir: Path, runtime: str, threads: int | None) -> tuple[Any, Any, Any]:
    """The model folder's text model, a ``Generator`` on the runtime named, and the plugin manager."""
    from sigerlm.plugins import make_plugin_manager
    from sigerlm_text.generation import Generator, make_runtime
    from sigerlm_text.model import load_text_model

    pm = make_plugin_manager()
    model = load_text_model(model_dir, components=pm)
    return model, Generator(make_runtime(model, runtime, threads, pm), model.adapter.tokenizer), pm


def generate_command(
    model_dir: Annotated[Path, typer.Argument(help="A model folder (config.json, model.safetensors, tokenizer).")],
    prompt: Annotated[str, typer.Argument(help="The prompt.")],
    stream: Annotated[bool, typer.Option("--stream", help="Print text as it is generated.")] = False,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = 128,
    temperature: Annotated[float, typer.Option("--temperature", help="0: greedy.")] = 0.0,
    top_k: Annotated[int, typer.Option("--top-k")] = 0,
    top_p: Annotated[float, typer.Option("--top-p")] = 1.0,
    repetition_penalty: Annotated[float, typer.Option("--repetition-penalty")] = 1.0,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    stop: Annotated[list[str] | None, typer.Option("--stop", help="A stop string; repeatable.")] = None,
    hide_thought: Annotated[bool, typer.Option("--hide-thought", help="Leave <thought> blocks out.")] = False,
    threads: Annotated[int | None, typer.Option("--threads", min=1)] = None,
    runtime: Annotated[str, typer.Option("--runtime", help="A registered runtime (torch, ...).")] = "torch",
) -> None:
    """Continue a prompt with a trained model (cached decoding: each token costs the same)."""
    from sigerlm_text.generation import GenerationConfig

    for text, what in [(prompt, "the prompt"), *((s, "--stop") for s in stop or [])]:
        utf8(text, what)
    config = GenerationConfig.build(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        seed=seed,
        stop=stop or [],
        hide_thought=hide_thought,
    )
    _, generator, _ = load_generator(model_dir, runtime, threads)
    if stream:
        for delta in generator.stream(prompt, config):
            typer.echo(delta, nl=False)
        typer.echo()
    else:
        typer.echo(generator.generate(prompt, config).text)


def chat_command(
    model_dir: Annotated[Path, typer.Argument(help="A model folder.")],
    system: Annotated[str | None, typer.Option("--system", help="System prompt.")] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = 128,
    temperature: Annotated[float, typer.Option("--temperature")] = 0.0,
    top_k: Annotated[int, typer.Option("--top-k")] = 0,
    top_p: Annotated[float, typer.Option("--top-p")] = 1.0,
    repetition_penalty: Annotated[float, typer.Option("--repetition-penalty")] = 1.1,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    max_context_tokens: Annotated[int, typer.Option("--max-context-tokens")] = 2048,
    threads: Annotated[int | None, typer.Option("--threads", min=1)] = None,
    runtime: Annotated[str, typer.Option("--runtime", help="A registered runtime (torch, ...).")] = "torch",
) -> None:
    """Chat with a model: type a message, or /help. Piped input: one message a line."""
    import sys

    from sigerlm.errors import SigerError
    from sigerlm_text.chat_session import ChatSession, collect_commands, collect_router
    from sigerlm_text.generation import GenerationConfig

    config = GenerationConfig.build(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        seed=seed,
    )
    model, generator, pm = load_generator(model_dir, runtime, threads)
    session = ChatSession(generator, system, config, max_context_tokens)
    commands = collect_commands(pm)
    session.router = collect_router(pm)  # plugins may answer plain messages (Lampung translation)
    interactive = sys.stdin.isatty()
    if interactive:
        typer.echo(f"{model.identity} chat. /help for commands, /exit to leave.")
    number = 0
    while True:
        if interactive:
            typer.echo("> ", nl=False)
        number += 1
        line = read_line(sys.stdin, number)
        if not line:
            break
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            name, _, arg = line.partition(" ")
            if name in ("/exit", "/quit"):
                break
            if name == "/help":
                typer.echo("/help  this list\n/exit  leave")
                for cmd, (_, text) in sorted(commands.items()):
                    typer.echo(f"{cmd}  {text}")
                continue
            if name not in commands:
                typer.echo(f"unknown command {name}; /help lists them")
                continue
            try:
                out = commands[name][0](session, arg)
            except (ValueError, SigerError) as exc:
                out = f"error: {exc}"
            if out:
                typer.echo(out)
            continue
        for delta in session.stream(line):
            typer.echo(delta, nl=False)
        typer.echo()
