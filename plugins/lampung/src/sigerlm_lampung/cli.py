"""``siger lampung ...``: commands of the Lampung plugin."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Lampung (dialect O / Nyo, abl) data and translation tools.", no_args_is_help=True)


@app.command("data-check")
def data_check(
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Data folder (default: $SIGER_DATA_DIR or ../shared/data).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Check the Lampung pair files: rows, sources, quality flags, broken or incomplete rows."""
    from sigerlm.paths import data_dir as find_data_dir
    from sigerlm_lampung.data import check_pair_files

    root = find_data_dir(data_dir)
    reports = check_pair_files(root / "lampung")
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in reports], indent=2, ensure_ascii=False))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table("file", "rows", "with english", "flagged", "problems")
        for r in reports:
            problems = "; ".join(r.problems[:3]) + (f" (+{len(r.problems) - 3} more)" if len(r.problems) > 3 else "")
            table.add_row(r.path, str(r.rows), str(r.with_english), str(sum(r.flags.values())), problems or "-")
        Console().print(table)
    if any(r.problems for r in reports):
        raise typer.Exit(1)


DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Data folder (default: $SIGER_DATA_DIR or ../shared/data).")
]


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@app.command("translate")
def translate(
    text: Annotated[
        list[str] | None, typer.Argument(help="Text to translate; none: read stdin, one sentence a line.")
    ] = None,
    src: Annotated[str, typer.Option("--from", help="Source language: abl (Lampung O), ind or eng.")] = "abl",
    tgt: Annotated[str, typer.Option("--to", help="Target language: abl, ind or eng.")] = "ind",
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object a line: translation, stage, confidence, unknown words.")
    ] = False,
    model_dir: Annotated[
        Path | None, typer.Option("--model", help="A SigerLM model folder for the low-confidence fallback.")
    ] = None,
    adapter: Annotated[
        Path | None, typer.Option("--adapter", help="A LoRA adapter folder to put on the --model (needs sigerlm-lora).")
    ] = None,
    fallback_below: Annotated[
        float, typer.Option("--fallback-below", help="Ask the model below this confidence.")
    ] = 0.5,
    meizano: Annotated[
        Path | None, typer.Option("--meizano", help="The meizano dictionary (default: in the data folder).")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Translate between Lampung O (abl), Indonesian (ind) and English (eng).

    With TEXT, translates it; without, reads stdin and prints one translation a line, in order."""
    import sys

    from sigerlm.errors import SigerError
    from sigerlm_lampung.service import get_translator, model_generate
    from sigerlm_lampung.translator import lang_code

    try:
        src, tgt = lang_code(src), lang_code(tgt)
        if src == tgt:
            _fail(f"--from and --to are both {src}")
        if model_dir is not None and not model_dir.is_dir():
            _fail(f"--model {model_dir}: not a model folder")
        try:
            lines = [" ".join(text)] if text else [line.rstrip("\r\n") for line in sys.stdin]
        except UnicodeDecodeError as exc:
            _fail(f"standard input is not UTF-8 text ({exc.reason} at byte {exc.start})")
        if adapter is not None and model_dir is None:
            _fail("--adapter needs --model (the base the adapter was trained on)")
        generate = model_generate(model_dir, adapter=adapter) if model_dir is not None else None
        translator = get_translator(data_dir, meizano, generate, fallback_below)
        for line in lines:
            if not line.strip():
                typer.echo(json.dumps({"text": "", "stage": "empty", "confidence": 0.0}) if as_json else "")
                continue
            result = translator.translate(line, src, tgt)
            if as_json:
                row = result.to_dict()
                typer.echo(
                    json.dumps(
                        {
                            "text": row["text"],
                            "stage": row["stage"],
                            "confidence": row["confidence"],
                            "source": line,
                            "direction": row["direction"],
                            "unknown": row["unknown"],
                            "marked": row["marked"],
                        },
                        ensure_ascii=False,
                    )
                )
            else:
                typer.echo(result.text)
    except SigerError as exc:
        _fail(str(exc))


@app.command("gloss")
def gloss(
    text: Annotated[list[str], typer.Argument(help="Text to gloss word by word.")],
    src: Annotated[str, typer.Option("--from", help="Language of TEXT.")] = "abl",
    tgt: Annotated[str, typer.Option("--to", help="Language of the glosses.")] = "ind",
    as_json: Annotated[bool, typer.Option("--json")] = False,
    data_dir: DataDir = None,
) -> None:
    """Word-by-word gloss with where each reading comes from (phrase table, affixes, spelling, unknown)."""
    from sigerlm.errors import SigerError
    from sigerlm_lampung.service import get_translator
    from sigerlm_lampung.translator import format_gloss

    try:
        rows = get_translator(data_dir).gloss(" ".join(text), src, tgt)
    except SigerError as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    typer.echo(format_gloss(rows))


@app.command("route")
def route(
    text: Annotated[list[str], typer.Argument(help="A chat message.")],
    data_dir: DataDir = None,
) -> None:
    """Show where a chat message would go (language and intent)."""
    from sigerlm_lampung.service import get_router

    typer.echo(json.dumps(get_router(data_dir).route(" ".join(text)).to_dict(), ensure_ascii=False))


@app.command("eval")
def evaluate(
    split: Annotated[str, typer.Option("--split", help="The split to score a system built from train on.")] = "valid",
    folds: Annotated[
        int, typer.Option("--folds", help="Cross-validation folds over the human-written pairs (0: skip).")
    ] = 5,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    english: Annotated[bool, typer.Option("--english/--no-english", help="Also score abl<->eng on the split.")] = True,
    router: Annotated[
        bool, typer.Option("--router/--no-router", help="Also report the router's held-out accuracy.")
    ] = True,
    out: Annotated[Path | None, typer.Option("--out", help="Write the JSON report here (and a .md beside it).")] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            help="Score this pair file instead of --split (system built from train + valid, overlaps removed).",
        ),
    ] = None,
    model_dir: Annotated[
        Path | None, typer.Option("--model", help="A model folder: let the model answer low-confidence texts.")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Exact match, BLEU, chrF++ and coverage per stage, source type and direction, next to a
    word-by-word dictionary baseline; plus k-fold cross-validation over the human-written pairs."""
    from sigerlm.errors import SigerError
    from sigerlm.io import atomic_write, atomic_write_json
    from sigerlm_lampung.evaluate import cross_validate, evaluate_split, markdown, router_markdown

    if folds == 1 or folds < 0:
        _fail("--folds must be 0 (skip) or at least 2")
    if model_dir is not None and not model_dir.is_dir():
        _fail(f"--model {model_dir}: not a model folder")
    try:
        generate = None
        if model_dir is not None:
            from sigerlm_lampung.service import model_generate

            generate = model_generate(model_dir)
        report: dict = {"split": evaluate_split(split, data_dir, english, file=file, generate=generate)}
        if folds:
            report["cross_validation"] = cross_validate(folds, seed, data_dir)
        if router:
            from sigerlm_lampung.router import train_language_id

            report["router"] = train_language_id(data_dir)[1]
    except SigerError as exc:
        _fail(str(exc))
    text = markdown(report["split"])
    if folds:
        text += "\n" + markdown(report["cross_validation"])
    if router:
        text += "\n" + router_markdown(report["router"])
    typer.echo(text)
    if out is not None:
        atomic_write_json(out, report)
        atomic_write(out.with_suffix(".md"), text)
        typer.echo(f"wrote {out} and {out.with_suffix('.md')}")


@app.command("build-dataset")
def build_dataset(
    out: Annotated[Path, typer.Argument(help="Folder for instructions.jsonl and chat.jsonl.")],
    split: Annotated[str, typer.Option("--split")] = "train",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    data_dir: DataDir = None,
) -> None:
    """Instruction and chat JSONL for every direction, shuffled with SEED.

    abl<->ind, and abl<->eng where English exists."""
    from sigerlm.errors import SigerError
    from sigerlm_lampung.builders import write_datasets

    try:
        report = write_datasets(out, split, seed, data_dir)
    except SigerError as exc:
        _fail(str(exc))
    typer.echo(json.dumps(report, indent=2))


@app.command("chat")
def chat(
    model_dir: Annotated[
        Path | None, typer.Argument(help="A model folder for general chat and the fallback (optional).")
    ] = None,
    system: Annotated[str | None, typer.Option("--system", help="System prompt.")] = None,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens")] = 128,
    data_dir: DataDir = None,
) -> None:
    """Chat with automatic routing: Lampung input and translation requests are translated, other
    messages go to the model. The Lampung commands (/lo-id, /id-lo, /lo-en, /en-lo, /reason,
    /chat) work too. Piped input: one message a line."""
    import sys

    from sigerlm.errors import SigerError
    from sigerlm_lampung.chat import INTENT_DIRECTIONS, register_all, translate_reply
    from sigerlm_lampung.chat import chat as chat_command
    from sigerlm_lampung.service import get_router

    session = None
    if model_dir is not None:
        if not model_dir.is_dir():
            _fail(f"{model_dir}: not a model folder")
        from sigerlm_text.chat_session import ChatSession
        from sigerlm_text.cli import load_generator
        from sigerlm_text.generation import GenerationConfig

        _, generator, _ = load_generator(model_dir, "torch", None)
        session = ChatSession(
            generator,
            system,
            GenerationConfig.build(max_new_tokens=max_new_tokens, repetition_penalty=1.1),
        )
    commands: dict = {}
    register_all(lambda name, handler, text="": commands.__setitem__(name, (handler, text)))
    router = get_router(data_dir)
    interactive = sys.stdin.isatty()
    if interactive:
        typer.echo("Lampung chat: Lampung text or 'terjemahkan ke bahasa Lampung: ...' is translated. /help, /exit.")
    for line in iter(sys.stdin.readline, ""):
        line = line.strip()
        if not line:
            continue
        name, _, arg = line.partition(" ")
        if name in ("/exit", "/quit"):
            break
        try:
            if name == "/help":
                out = "\n".join(f"{cmd}  {text}" for cmd, (_, text) in sorted(commands.items()))
            elif name in commands:
                out = commands[name][0](session, arg)
            elif line.startswith("/"):
                out = f"unknown command {name}; /help lists them"
            else:
                route = router.route(line)
                if route.intent in INTENT_DIRECTIONS:
                    out = f"({route.intent}) " + translate_reply(session, route.text, *INTENT_DIRECTIONS[route.intent])
                else:
                    out = chat_command(session, line)
        except (ValueError, SigerError) as exc:
            out = f"error: {exc}"
        if out:
            typer.echo(out)
