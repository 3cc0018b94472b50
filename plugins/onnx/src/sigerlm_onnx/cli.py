"""``siger export onnx MODEL_DIR --out DIR [--quantize none|int8|int4] [--opset N]``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Export models (onnx: ONNX graphs for onnxruntime).", no_args_is_help=True)


@app.command("onnx")
def export_onnx(
    model_dir: Annotated[Path, typer.Argument(help="A model folder (config.json, model.safetensors, tokenizer).")],
    out: Annotated[Path, typer.Option("--out", help="The export folder (a model folder plus model.onnx).")],
    quantize: Annotated[str, typer.Option("--quantize", help="none, int8 or int4.")] = "none",
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset.")] = 17,
    block_size: Annotated[int, typer.Option("--block-size", help="INT4 block size.")] = 32,
    accuracy_level: Annotated[int, typer.Option("--accuracy-level", help="INT4 MatMulNBits accuracy_level.")] = 4,
    parity: Annotated[bool, typer.Option("--parity/--no-parity", help="Check against torch (parity.json).")] = True,
    parity_text: Annotated[
        Path | None, typer.Option("--parity-text", help="Text file for top-1 agreement and perplexity.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Write into --out even if it holds files.")] = False,
) -> None:
    """Export a model folder to ONNX; `siger generate/chat/serve --runtime onnxruntime` run the result."""
    from pydantic import ValidationError

    from sigerlm.errors import SigerError
    from sigerlm.io import check_output
    from sigerlm.plugins import make_plugin_manager

    try:
        check_output(out, force, "--out")
        options = _options(
            quantize=quantize,
            opset=opset,
            block_size=block_size,
            accuracy_level=accuracy_level,
            parity=parity,
            parity_text=str(parity_text) if parity_text else None,
        )
        pm = make_plugin_manager()
        from sigerlm.assemble import load_model

        model = load_model(model_dir, pm)
        path = pm.get_component("exporters", "onnx").build(model, out, options=options.model_dump())
    except (SigerError, ValidationError) as exc:
        typer.echo(f"error: {str(exc).splitlines()[0] if isinstance(exc, SigerError) else exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"exported {model_dir} -> {path} ({quantize})")
    report = Path(path) / "parity.json"
    if report.is_file():
        typer.echo(f"parity: {report.read_text(encoding='utf-8').strip()}")


def _options(**values):
    from sigerlm_onnx.hooks import ExportOptions

    return ExportOptions(**values)
