"""``siger timeseries stream|predict``: a saved series model on a ``.ts`` or CSV file.

Only typer is imported at module level (``siger --help`` stays fast); torch comes with a command.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(help="Time series models: stream samples one at a time, or predict whole series.")

ModelDir = typer.Argument(..., help="A model folder saved by a run with the series adapter.")
File = typer.Argument(..., help="A .ts file (series per line) or a CSV file (one row per step).")
RuntimeOption = typer.Option("torch", "--runtime", help="The runtime component that runs the model.")
ColumnsOption = typer.Option(None, "--columns", help="CSV: comma-separated columns (default: every numeric one).")
JsonOption = typer.Option(False, "--json", help="One JSON object per line.")


def _fail(message: str) -> None:
    """Print a one-line error and exit with status 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _load(model_dir: Path, runtime: str) -> tuple[Any, Any]:
    from sigerlm.assemble import load_model
    from sigerlm.plugins import make_plugin_manager

    pm = make_plugin_manager()
    model = load_model(model_dir, pm)
    if getattr(getattr(model.adapter, "options", None), "channels", None) is None:
        _fail(f"{model_dir} is not a series model (adapter {model.spec.get('adapter')})")
    options = {}
    component = pm.get_component("runtimes", runtime)
    if component.name == "torch":  # keep chunks of the prefill on patch boundaries
        options["prefill_chunk"] = max(1, 512 // model.adapter.patch) * model.adapter.patch
    return model, component.build(model, options=options)


def _series(file: Path, columns: str | None) -> tuple[list[Any], list[str]]:
    """The series of a file ``(l, c)`` each, and their labels ('' when unknown)."""
    from sigerlm_timeseries.data import read_csv, read_ts

    if file.suffix.lower() == ".csv":
        values, _ = read_csv(file, columns.split(",") if columns else None)
        return [values], [""]
    data = read_ts(file)
    return data.series, data.labels


def _check_channels(model: Any, values: Any, file: Path) -> None:
    if values.shape[1] != model.adapter.channels:
        _fail(f"{file} has {values.shape[1]} channels, the model takes {model.adapter.channels}")


@app.command()
def stream(
    model_dir: Path = ModelDir,
    file: Path = File,
    series: int = typer.Option(0, "--series", help="Which series of a .ts file."),
    columns: str | None = ColumnsOption,
    runtime: str = RuntimeOption,
    as_json: bool = JsonOption,
) -> None:
    """Feed one series sample by sample through the runtime's step; print the running class
    probabilities (or the rolling forecast) after each sample."""
    import torch

    from sigerlm_timeseries.stream import SeriesStream

    model, rt = _load(model_dir, runtime)
    all_series, labels = _series(file, columns)
    if not 0 <= series < len(all_series):
        _fail(f"--series {series}: {file} has {len(all_series)} series")
    values = torch.from_numpy(all_series[series]).float()
    _check_channels(model, values, file)
    streamer = SeriesStream(model, rt)
    classes = model.adapter.classes
    for t in range(values.shape[0]):
        start = time.perf_counter()
        out = streamer.push(values[t])
        micros = (time.perf_counter() - start) * 1e6
        if out is None:
            continue
        if classes:
            probs = out[0].tolist()
            best = classes[max(range(len(probs)), key=probs.__getitem__)]
            if as_json:
                row = {"t": t + 1, "probabilities": dict(zip(classes, probs, strict=True)), "class": best}
                typer.echo(json.dumps({**row, "us": round(micros, 1)}))
            else:
                text = " ".join(f"{c}={p:.3f}" for c, p in zip(classes, probs, strict=True))
                typer.echo(f"{t + 1:>6} {text} -> {best}")
        else:
            forecast = out[0].tolist()
            if as_json:
                typer.echo(json.dumps({"t": t + 1, "forecast": forecast, "us": round(micros, 1)}))
            else:
                typer.echo(f"{t + 1:>6} " + " | ".join(" ".join(f"{v:.4g}" for v in step) for step in forecast))
    if labels[series] and not as_json:
        typer.echo(f"true class: {labels[series]}")


@app.command()
def predict(
    model_dir: Path = ModelDir,
    file: Path = File,
    columns: str | None = ColumnsOption,
    runtime: str = RuntimeOption,
    as_json: bool = JsonOption,
    context: int | None = typer.Option(
        None, "--context", min=1, help="Use only the last N steps of each series (a forecaster's training window)."
    ),
) -> None:
    """Classify every series of a file (with the accuracy when it has labels), or forecast the
    steps after a CSV series."""
    import torch

    from sigerlm_timeseries.stream import predict as run_predict

    model, rt = _load(model_dir, runtime)
    all_series, labels = _series(file, columns)
    classes = model.adapter.classes
    right = 0
    for i, (array, label) in enumerate(zip(all_series, labels, strict=True)):
        values = torch.from_numpy(array[-context:] if context else array).float()[None]
        _check_channels(model, values[0], file)
        out = run_predict(model, rt, values)[0]
        if classes:
            best = classes[int(out.argmax())]
            right += int(best == label)
            if as_json:
                probs = dict(zip(classes, out.tolist(), strict=True))
                typer.echo(json.dumps({"series": i, "class": best, "probabilities": probs, "label": label or None}))
            else:
                typer.echo(f"{i:>5} {best} ({float(out.max()):.3f})" + (f" true {label}" if label else ""))
        elif as_json:
            typer.echo(json.dumps({"series": i, "forecast": out.tolist()}))
        else:
            for h, step in enumerate(out.tolist(), 1):
                typer.echo(f"+{h} " + " ".join(f"{v:.6g}" for v in step))
    if classes and all(labels) and not as_json:
        typer.echo(f"accuracy {right / len(labels):.4f} ({right}/{len(labels)})")
