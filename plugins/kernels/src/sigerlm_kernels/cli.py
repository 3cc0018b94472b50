"""``siger kernels``: build the compiled kernels ahead of first use, and say where they are."""

from __future__ import annotations

import json
import time

import typer

app = typer.Typer(help="SigerLM's compiled CPU kernels (the fused scan back-end).", no_args_is_help=True)


def _info() -> dict:
    from sigerlm_kernels import kernels

    name = kernels.extension_name()
    return {"name": name, "folder": str(kernels.build_folder(name)), "source": str(kernels.SOURCE)}


@app.command("build")
def build_command() -> None:
    """Compile the kernels for this machine now (about a minute; cached), so that no run waits for it."""
    from sigerlm_kernels import kernels

    start = time.monotonic()
    module = kernels.load()
    info = {**_info(), "vectorised_for": module.build_info(), "seconds": round(time.monotonic() - start, 1)}
    typer.echo(json.dumps(info, indent=2))


@app.command("info")
def info_command() -> None:
    """Where the kernels for this machine are cached, and whether they are built (builds nothing)."""
    from sigerlm_kernels import kernels

    info = _info()
    built = any(kernels.build_folder(info["name"]).glob("*.so"))
    typer.echo(json.dumps({**info, "built": built}, indent=2))
