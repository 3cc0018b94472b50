"""Hook implementations of sigerlm-lampung (entry point ``lampung``).

Keep this module light: it is imported by every ``siger`` call. Commands import their
modules inside the functions.
"""

from __future__ import annotations

from sigerlm import hookimpl


@hookimpl
def register_commands(cli):
    from sigerlm_lampung.cli import app

    cli.add_typer(app, name="lampung")
