"""Hook implementations of sigerlm-kernels (entry point ``kernels``).

Light (no torch): every ``siger`` call imports it. (The ``fused`` scan back-end is found through
the entry-point group ``sigerlm.scans``, whether or not this plugin is loaded.)
"""

from __future__ import annotations

from sigerlm import hookimpl


@hookimpl
def register_commands(cli):
    from sigerlm_kernels.cli import app

    cli.add_typer(app, name="kernels")
