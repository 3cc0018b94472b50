"""``siger lora ...``: merge an adapter into a model folder, describe an adapter folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="LoRA adapters: merge one into a standalone model, describe one.", no_args_is_help=True)


@app.command("merge")
def merge(
    base: Annotated[Path, typer.Argument(help="The base model folder the adapter was tuned on.")],
    adapter: Annotated[Path, typer.Argument(help="The adapter folder (adapter.safetensors + adapter_config.json).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the merged model.")],
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it already holds something.")] = False,
) -> None:
    """Write BASE with ADAPTER added into its weights as a plain model folder."""
    from sigerlm.io import check_output
    from sigerlm_lora.files import merge_and_export

    check_output(out, force, "--out")  # never a file or a system folder; a folder with files only with --force
    folder = merge_and_export(base, adapter, out)
    typer.echo(f"merged {adapter} into {base}: {folder}")


@app.command("info")
def info(
    adapter: Annotated[Path, typer.Argument(help="An adapter folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show an adapter's rank, alpha, layers, size and the base it belongs to."""
    from sigerlm_lora.files import describe

    meta = describe(adapter)
    if as_json:
        typer.echo(json.dumps(meta, indent=2))
        return
    typer.echo(
        f"adapter '{meta['name']}': rank {meta['rank']}, alpha {meta['alpha']}, dropout {meta.get('dropout', 0)}"
    )
    typer.echo(
        f"  {len(meta['modules'])} layers ({', '.join(meta.get('targets') or [])}), {meta['parameters']:,} parameters"
    )
    typer.echo(
        f"  base {meta['base_hash'][:12]} {meta.get('base_identity') or ''} {meta.get('base_model') or ''}".rstrip()
    )
