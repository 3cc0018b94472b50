"""``siger eval MODEL_DIR [MODEL_DIR ...] --task FILE.yaml``: the models side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def eval_command(
    model_dirs: Annotated[list[Path], typer.Argument(help="Model folders to compare (config.json, weights).")],
    task: Annotated[Path, typer.Option("--task", help="A task file listing evaluators and their data (YAML).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for eval.json, eval.md and details (default runs/eval/TASK).")
    ] = None,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="torch threads.")] = None,
) -> None:
    """Evaluate model folders on a task file: one table, eval.json and eval.md."""
    from rich.console import Console

    from sigerlm_eval.task import eval_models, rich_table

    if threads:
        import torch

        torch.set_num_threads(threads)
    out = out or Path("runs") / "eval" / task.stem
    report = eval_models(model_dirs, task, out)
    console = Console()
    console.print(rich_table(report["results"], title=f"{report['name']} ({task})"))
    console.print(f"wrote {out / 'eval.json'} and {out / 'eval.md'}", markup=False)
