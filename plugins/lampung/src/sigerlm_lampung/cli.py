"""``siger lampung ...``: commands of the Lampung plugin."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(help="Lampung (dialect O / Nyo, abl) data and translation tools.", no_args_is_help=True)


@app.command("data-check")
def data_check(
    data_dir: Annotated[
        Optional[Path], typer.Option("--data-dir", help="Data folder (default: $SIGER_DATA_DIR or ../shared/data).")
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
