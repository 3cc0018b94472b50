"""Hook implementations of sigerlm-onnx: the ``onnx`` exporter (``siger export onnx``, through
core's generic export command), the ``onnxruntime`` runtime and the ``onnx-export`` step.
Light: onnx, onnxruntime and torch are imported inside the factories."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sigerlm import hookimpl


class ExportOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quantize: Literal["none", "int8", "int4"] = Field("none", description="Weight quantization of the graphs.")
    opset: int = Field(17, ge=14, le=21, description="ONNX opset of the exported graph.")
    block_size: int = Field(32, ge=16, description="INT4: weights per quantization block (a power of 2).")
    accuracy_level: int = Field(4, ge=0, le=4, description="INT4: MatMulNBits accuracy_level (4: int8 compute).")
    quantize_embedding: bool = Field(
        True,
        description="INT8/INT4: quantize the embedding table's lookup too (int8 per row / 4-bit GatherBlockQuantized).",
    )
    parity: bool = Field(True, description="Check onnxruntime against torch and write parity.json.")
    parity_steps: int = Field(64, ge=1, description="Chained decode steps compared at batch 1 and 3.")
    parity_positions: int = Field(1000, ge=1, description="Positions of text for top-1 agreement and perplexity.")
    parity_text: str | None = Field(None, description="A text file for those positions (default: random ids).")
    threads: int | None = Field(None, ge=1, description="onnxruntime threads during the parity check.")


class RuntimeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threads: int | None = Field(None, ge=1, description="intra-op threads (default: onnxruntime's).")
    optimization: Literal["none", "basic", "extended", "all"] = "all"


class ExportStepOptions(ExportOptions):
    out: str = Field(description="The export folder.")
    force: bool = False


@hookimpl
def register_exporters(register):
    register("onnx", build_exporter, options=ExportOptions, description="ONNX prefill/decode graph (+ INT8/INT4).")


@hookimpl
def register_runtimes(register):
    register("onnxruntime", build_runtime, options=RuntimeOptions, description="Decode through an exported ONNX graph.")


@hookimpl
def register_steps(register):
    register("onnx-export", export_step, options=ExportStepOptions, description="Export the run's model to ONNX.")


def build_exporter(model, out_dir, options: ExportOptions):
    from pathlib import Path

    from sigerlm_onnx.export import export_folder

    path = export_folder(model, Path(out_dir), options)
    report = Path(path) / "parity.json"
    if report.is_file():  # what `siger export onnx` prints after the export
        print(f"parity: {report.read_text(encoding='utf-8').strip()}")
    return path


def build_runtime(model, options: RuntimeOptions):
    from sigerlm_onnx.runtime import OnnxRuntime

    return OnnxRuntime(model, threads=options.threads, optimization=options.optimization)


def export_step(run, options: ExportStepOptions):
    from pathlib import Path

    from sigerlm.assemble import current_model
    from sigerlm.io import check_output
    from sigerlm_onnx.export import export_folder

    out = check_output(Path(options.out), options.force, "out")
    export_options = ExportOptions(**options.model_dump(exclude={"out", "force"}))
    export_folder(current_model(run), out, export_options)
    return {"onnx_folder": str(out)}
