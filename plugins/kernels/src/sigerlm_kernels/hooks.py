"""Hook implementations of sigerlm-kernels (entry point ``kernels``).

Importing this module imports the package, which registers the ``fused`` scan back-end; it stays
light (no torch): every ``siger`` call imports it.
"""

from __future__ import annotations

from sigerlm import hookimpl


@hookimpl
def register_commands(cli):
    from sigerlm_kernels.cli import app

    cli.add_typer(app, name="kernels")
