"""The ``siger`` command line.

Core commands: ``run``, ``validate``, ``plugins``, ``manifest-schema``, ``export`` (registered exporters).
Plugins add theirs through ``register_commands(cli)``, under their own name (``siger lampung ...``).
A plugin that fails to load is reported and left out; it never breaks ``siger --help``.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from sigerlm import __version__
from sigerlm.assemble import load_model
from sigerlm.errors import SigerError, closest
from sigerlm.io import check_output
from sigerlm.plugins import SigerPluginManager, make_plugin_manager

HELP = ("-h", "--help")
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a manifest value: key.path=value (YAML value), repeatable."),
]


def _console(stderr: bool = True):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True, emoji=False)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"siger (sigerlm) {__version__}")
        raise typer.Exit()


def build_app(pm: SigerPluginManager | None = None) -> typer.Typer:
    """The ``siger`` application with core commands and every loaded plugin's commands."""
    app = typer.Typer(
        name="siger",
        help="SigerLM: build, train, tune, evaluate, export and serve small state-space language models.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @app.callback()
    def root(
        version: Annotated[
            bool, typer.Option("--version", "-V", callback=_version_callback, is_eager=True, help="Show the version.")
        ] = False,
    ) -> None:
        """SigerLM command line."""

    @app.command("plugins")
    def plugins_command(
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    ) -> None:
        """List installed plugins, their versions and components, and any load error."""
        manager = pm if pm is not None else make_plugin_manager()
        records = [r.to_dict() for r in manager.plugin_records()]
        if as_json:
            typer.echo(json.dumps(records, indent=2))
            return
        from rich.table import Table

        table = Table("plugin", "distribution", "version", "components", "status")
        for r in records:
            parts = [f"{kind}: {', '.join(names)}" for kind, names in r["components"].items()]
            status = "ok" if r["loaded"] else f"[red]failed[/red]: {r['error']}"
            table.add_row(r["name"], r["distribution"] or "-", r["version"] or "-", "\n".join(parts) or "-", status)
        _console(stderr=False).print(table)

    @app.command("validate")
    def validate_command(
        file: Annotated[Path, typer.Argument(help="Manifest file (YAML or JSON).")],
        set_: SetOption = None,
        show: Annotated[bool, typer.Option("--show", help="Print the resolved manifest.")] = False,
    ) -> None:
        """Check a manifest without running it: structure, plugins, components and their options."""
        import yaml

        from sigerlm.manifest import load_manifest

        resolved, _ = load_manifest(file, set_ or [])
        if show:
            typer.echo(yaml.safe_dump(resolved.to_dict(), sort_keys=False), nl=False)
        else:
            uses = sorted({c.component.qualified_name for c in resolved.components.values()})
            typer.echo(f"{file}: valid ({len(resolved.manifest.steps)} steps; components: {', '.join(uses)})")

    @app.command("run")
    def run_command(
        file: Annotated[Path, typer.Argument(help="Manifest file (YAML or JSON).")],
        set_: SetOption = None,
        resume: Annotated[bool, typer.Option("--resume", help="Continue an unfinished run in its out_dir.")] = False,
        force: Annotated[bool, typer.Option("--force", help="Overwrite a finished or unfinished run.")] = False,
        out_dir: Annotated[
            Path | None, typer.Option("--out-dir", "-o", help="Run folder (default: the manifest's out_dir).")
        ] = None,
    ) -> None:
        """Validate a manifest, then run its steps in order, recording everything in out_dir."""
        from sigerlm.manifest import load_manifest
        from sigerlm.run import execute

        if resume and force:
            raise SigerError("--resume and --force contradict each other: choose one")
        _setup_logging()
        overrides = list(set_ or []) + ([f"out_dir={out_dir}"] if out_dir is not None else [])
        resolved, manager = load_manifest(file, overrides, force=force)
        result = execute(resolved, manager, resume=resume, force=force)
        console = _console(stderr=False)
        for step in result.results.get("steps", []):
            numbers = ", ".join(f"{k}={_fmt(v)}" for k, v in step.get("results", {}).items())
            console.print(
                f"step {step['index']} {step['use']}: {numbers or 'done'} ({step['seconds']} s)", markup=False
            )
        console.print(f"run {resolved.manifest.name} {result.status}: {result.out_dir}", markup=False)

    @app.command("manifest-schema")
    def manifest_schema_command(
        out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to this file instead of stdout.")] = None,
    ) -> None:
        """Print the JSON schema of the manifest format."""
        from sigerlm.manifest import manifest_json_schema

        text = json.dumps(manifest_json_schema(), indent=2) + "\n"
        if out is None:
            typer.echo(text, nl=False)
        else:
            from sigerlm.io import atomic_write

            atomic_write(out, text)

    @app.command("export", add_help_option=False, context_settings={"ignore_unknown_options": True})
    def export_command(args: Annotated[list[str] | None, typer.Argument(help="NAME MODEL_DIR --out PATH ...")] = None):
        """Export a model folder: NAME MODEL_DIR --out PATH [--force] [--OPTION VALUE ...] (--help: the exporters)."""
        manager, words = pm if pm is not None else make_plugin_manager(), [a for a in args or [] if a not in HELP]
        if not words or words[0].startswith("-"):
            typer.echo("siger export NAME MODEL_DIR --out PATH [--force] [--OPTION VALUE ...]\nexporters:")
            typer.echo(
                "\n".join(f"  {c.name:<8} {c.description} ({c.plugin})" for c in manager.components["exporters"])
            )
            raise typer.Exit(0 if set(HELP) & set(args or []) else 2)
        exporter = manager.get_component("exporters", words.pop(0))
        fields, where, given, positional = exporter.options.model_fields, f"exporter '{exporter.name}'", {}, []
        if set(HELP) & set(args or []):
            typer.echo(f"siger export {exporter.name} MODEL_DIR --out PATH [--force]: {exporter.description}")
            for key, f in fields.items():
                kind = str(f.annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")
                default = "required" if f.is_required() else f"default {f.default!r}"
                typer.echo(f"  --{key.replace('_', '-'):<16} {kind} ({default}) {f.description or ''}")
            return
        while words:
            key, eq, value = (word := words.pop(0)).removeprefix("--").partition("=")
            name, bools = key.replace("-", "_"), {n for n, f in fields.items() if f.annotation is bool} | {"force"}
            if not word.startswith("--"):
                positional.append(word)
            elif name in bools or name.startswith("no_") and name[3:] in bools:
                given[name.removeprefix("no_")] = name in bools if not eq else value
            elif name not in fields and name != "out":
                hint = closest(name, fields)
                raise SigerError(f"{where} has no option --{key}" + (f"; did you mean --{hint}?" if hint else ""))
            elif not (eq or words):
                raise SigerError(f"{where}: --{key} needs a value")
            else:
                given[name] = value if eq else words.pop(0)
        force, out = given.pop("force", False), given.pop("out", None)
        if len(positional) != 1 or out is None:
            raise SigerError(f"usage: siger export {exporter.name} MODEL_DIR --out PATH (see -h for its options)")
        try:
            options = exporter.validate(given)
        except ValidationError as exc:
            loc, msg = str(exc.errors()[0]["loc"][0]).replace("_", "-"), exc.errors()[0]["msg"]
            raise SigerError(f"{where}: --{loc}: {msg}") from None
        target = check_output(out, force, "--out")
        _setup_logging()
        path = exporter.build(load_model(positional[0], manager), target, options=options)
        typer.echo(f"exported {positional[0]} -> {path} ({exporter.qualified_name})")

    if pm is not None:
        _add_plugin_commands(app, pm)
    return app


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _add_plugin_commands(app: typer.Typer, pm: SigerPluginManager) -> None:
    """Let each plugin add its commands; a plugin that raises is recorded and skipped."""
    for impl in pm.hook.register_commands.get_hookimpls():
        others = [p for n, p in pm.list_name_plugin() if n != impl.plugin_name]
        try:
            pm.subset_hook_caller("register_commands", remove_plugins=others)(cli=app)
        except Exception as exc:
            record = pm.records.get(impl.plugin_name)
            if record is not None:
                record.error = f"in register_commands: {type(exc).__name__}: {exc}"


def _setup_logging() -> None:
    """Rich, columned log lines on a terminal; plain one-line records when stderr is a pipe or
    a file (a log line is never wrapped where programs and people grep it)."""
    logger = logging.getLogger("sigerlm")
    if not any(getattr(h, "_siger_cli", False) for h in logger.handlers):
        handler: logging.Handler
        if sys.stderr.isatty():
            from rich.logging import RichHandler

            handler = RichHandler(console=_console(), show_path=False, markup=False)
            handler.setFormatter(logging.Formatter("%(message)s"))
        else:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        handler._siger_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _warn_failed(pm: SigerPluginManager) -> None:
    failed = [r for r in pm.records.values() if r.error]
    if failed:
        console = _console()
        for record in failed:
            console.print(
                f"warning: plugin '{record.name}' failed to load: {record.error} (`siger plugins` lists it)",
                style="yellow",
                markup=False,
            )


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``siger``."""
    args = sys.argv[1:] if argv is None else argv
    try:
        for i, arg in enumerate(args):
            try:
                arg.encode("utf-8")
            except UnicodeEncodeError as exc:  # bytes the locale could not decode, kept as surrogates
                raise SigerError(f"argument {i + 1} ({arg[: exc.start]}...) is not valid UTF-8 text") from None
        pm = make_plugin_manager()
        app = build_app(pm)
        if args[:1] != ["plugins"]:
            _warn_failed(pm)
        app(args=args, prog_name="siger")
    except SigerError as exc:
        _console().print(f"error: {exc}", style="red", markup=False)
        sys.exit(exc.exit_code)


if __name__ == "__main__":  # pragma: no cover
    main()
