"""A model whose adapter is not text: sigerlm-timeseries' ``series`` adapter (a classifier and a
forecaster) exported and run by ``siger timeseries predict/stream --runtime onnxruntime``.

The graph takes ``inputs_embeds``: the runtime runs the adapter's ``embed`` (values, mask and
the per-instance ``loc``/``scale`` the callers pass) in torch, and the graph gives the adapter's
head; the forecast goes back to the original scale in the caller, as with the torch runtime."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("sigerlm_timeseries")

CLASSIFIER = {"use": "series", "channels": 1, "classes": ["sine", "square"], "norm": "causal", "patch": 2}
FORECASTER = {"use": "series", "head": "forecast", "horizon": 3, "patch": 2, "norm": "instance", "season": 4}


@pytest.fixture
def pm():
    from sigerlm.plugins import make_plugin_manager
    from sigerlm_onnx import hooks as onnx_hooks
    from sigerlm_testkit import add_plugin
    from sigerlm_timeseries import hooks as series_hooks

    manager = make_plugin_manager(load="none")
    add_plugin(manager, series_hooks, "timeseries")
    add_plugin(manager, onnx_hooks, "onnx")
    return manager


def export(pm, tmp_path, spec, name):
    """A random series model saved as a folder, and its export (with its parity report)."""
    from sigerlm.assemble import build_model, load_model
    from sigerlm.model.config import SigerConfig

    torch.manual_seed(0)
    model = build_model(pm, SigerConfig.from_profile("tiny"), spec).eval()
    with torch.no_grad():  # a seasonal forecaster's readout starts at zero: give it weights, as training would
        model.adapter.readout.weight.normal_(0, 0.5)
    model.save(tmp_path / name)
    model = load_model(tmp_path / name, pm)
    options = {"parity_steps": 64, "parity_positions": 100}
    return pm.get_component("exporters", "onnx").build(model, tmp_path / f"{name}-onnx", options=options)


def cli(pm, monkeypatch, *args):
    import typer
    from typer.testing import CliRunner

    import sigerlm.plugins
    from sigerlm_timeseries.cli import app

    monkeypatch.setattr(sigerlm.plugins, "make_plugin_manager", lambda *a, **k: pm)
    root = typer.Typer()
    root.add_typer(app, name="timeseries")
    result = CliRunner().invoke(root, ["timeseries", *map(str, args)])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines()]


def write_ts(path, n, length):
    """A .ts file of ``n`` series, sines and square waves of random frequency, offset and scale;
    the second has a missing value."""
    rng = np.random.default_rng(0)
    lines = ["@problemName synthetic", "@univariate true", "@dimensions 1", "@classLabel true sine square", "@data"]
    for i in range(n):
        t = np.arange(length)
        wave = np.sin(2 * np.pi * rng.uniform(1.5, 4) * t / length + rng.uniform(0, 6))
        wave = (np.sign(wave) if i % 2 else wave) * rng.uniform(0.5, 3) + rng.uniform(-2, 2)
        text = ["?" if (i, j) == (1, 3) else f"{v:.6f}" for j, v in enumerate(wave)]
        lines.append(",".join(text) + (":square" if i % 2 else ":sine"))
    path.write_text("\n".join(lines) + "\n")
    return path


def close(a, b, key):
    np.testing.assert_allclose(np.array(a[key]), np.array(b[key]), rtol=1e-4, atol=1e-5)


def test_classifier_export_predict_and_stream_through_onnxruntime(pm, tmp_path, monkeypatch):
    folder = export(pm, tmp_path, {**CLASSIFIER, "readout": "last"}, "cls")
    meta = json.loads((folder / "config.json").read_text())["onnx"]
    assert meta["input"] == "inputs_embeds" and meta["output"] == "outputs" and meta["adapter"] == "timeseries:series"
    assert meta["source"]["tokenizer_hash"] is None
    report = json.loads((folder / "parity.json").read_text())
    assert report["batch1_max_rel_output_error"] < 1e-4 and report["batch3_max_rel_output_error"] < 1e-4
    assert report["batch1_argmax_identical"] and report["batch3_argmax_identical"]
    assert report["prefill_max_rel_output_error"] < 1e-4 and report["positions"] == 100

    ts = write_ts(tmp_path / "w.ts", 4, 21)  # odd length: the last patch is padded
    got = cli(pm, monkeypatch, "predict", folder, ts, "--json", "--runtime", "onnxruntime")
    want = cli(pm, monkeypatch, "predict", folder, ts, "--json", "--runtime", "torch")
    assert len(got) == 4
    for g, w in zip(got, want, strict=True):
        assert g["class"] == w["class"] and g["label"] == w["label"]
        for key in ("sine", "square"):
            assert g["probabilities"][key] == pytest.approx(w["probabilities"][key], abs=1e-5)
    got = cli(pm, monkeypatch, "stream", folder, ts, "--series", 1, "--json", "--runtime", "onnxruntime")
    want = cli(pm, monkeypatch, "stream", folder, ts, "--series", 1, "--json", "--runtime", "torch")
    assert [r["t"] for r in got] == [r["t"] for r in want] == list(range(2, 21, 2))  # one row per patch
    for g, w in zip(got, want, strict=True):
        assert g["class"] == w["class"]
        for key in ("sine", "square"):
            assert g["probabilities"][key] == pytest.approx(w["probabilities"][key], abs=1e-5)


def test_forecaster_export_predict_and_stream_through_onnxruntime(pm, tmp_path, monkeypatch):
    folder = export(pm, tmp_path, FORECASTER, "fc")
    t = np.arange(40)
    csv = tmp_path / "s.csv"
    csv.write_text("time,value\n" + "".join(f"{i},{100 + 20 * np.sin(i / 2):.6f}\n" for i in t))
    args = ("--columns", "value", "--json")
    got = cli(pm, monkeypatch, "predict", folder, csv, *args, "--runtime", "onnxruntime")
    want = cli(pm, monkeypatch, "predict", folder, csv, *args, "--runtime", "torch")
    assert np.array(got[0]["forecast"]).shape == (3, 1)  # the original scale: around 100
    assert 50 < np.abs(np.array(got[0]["forecast"])).mean() < 150
    close(got[0], want[0], "forecast")
    got = cli(pm, monkeypatch, "stream", folder, csv, *args, "--runtime", "onnxruntime")
    want = cli(pm, monkeypatch, "stream", folder, csv, *args, "--runtime", "torch")
    assert len(got) == len(want) == 20
    for g, w in zip(got, want, strict=True):
        close(g, w, "forecast")


def test_runtime_contract_on_a_multichannel_series_batch(pm, tmp_path):
    """prefill (whole series with their statistics), step (one patch per row), select_rows and
    stack_states, batch 3 with a missing value, against the torch runtime."""
    from sigerlm.assemble import load_model
    from sigerlm_timeseries.stream import SeriesStream, predict

    spec = {**CLASSIFIER, "channels": 3, "classes": ["a", "b", "c"], "patch": 4}  # mean readout: score
    folder = export(pm, tmp_path, spec, "multi")
    model = load_model(folder, pm)
    ort = pm.get_component("runtimes", "onnxruntime").build(model, options={"threads": 1})
    ref = pm.get_component("runtimes", "torch").build(model, options={"threads": 1})
    values = torch.randn(3, 30, 3, generator=torch.Generator().manual_seed(0)) * 4 + 2
    values[0, 5, 1] = float("nan")
    torch.testing.assert_close(predict(model, ort, values), predict(model, ref, values), atol=1e-5, rtol=1e-4)
    ours, theirs = SeriesStream(model, ort, 3), SeriesStream(model, ref, 3)
    outputs = 0
    for t in range(values.shape[1]):
        a, b = ours.push(values[:, t]), theirs.push(values[:, t])
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
            outputs += 1
    assert outputs == 7  # 30 samples, patches of 4
    rows = ort.select_rows(ours.state, torch.tensor([2, 0]))
    both = ort.stack_states([ort.select_rows(ours.state, torch.tensor([2])), ort.select_rows(ours.state, [0])])
    patch = {k: v[[2, 0], :4] for k, v in _inputs(model, values).items()}
    torch.testing.assert_close(ort.step(patch, rows)[0], ort.step(patch, both)[0])
    want, _ = ref.step(patch, ref.select_rows(theirs.state, torch.tensor([2, 0])))
    torch.testing.assert_close(ort.step(patch, rows)[0], want, atol=1e-5, rtol=1e-4)


def _inputs(model, values):
    from sigerlm_timeseries.stream import whole_series_inputs

    return whole_series_inputs(model.adapter, values)


@pytest.mark.slow
def test_siger_export_onnx_then_siger_timeseries_predict_in_a_subprocess(pm, tmp_path):
    """As a user runs it: ``siger export onnx`` on a saved series classifier, then ``siger
    timeseries predict --runtime onnxruntime`` on the export (installed plugins, subprocesses)."""
    import os
    import subprocess
    import sys

    from sigerlm.assemble import build_model
    from sigerlm.model.config import SigerConfig

    torch.manual_seed(0)
    build_model(pm, SigerConfig.from_profile("tiny"), {**CLASSIFIER, "readout": "last"}).save(tmp_path / "cls")
    ts = write_ts(tmp_path / "w.ts", 3, 12)

    def siger(*args):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        code = "from sigerlm.cli import main; main()"
        done = subprocess.run(
            [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env, timeout=300
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    out = tmp_path / "cls-onnx"
    siger("export", "onnx", tmp_path / "cls", "--out", out, "--parity-steps", 4, "--parity-positions", 20)
    assert json.loads((out / "config.json").read_text())["onnx"]["input"] == "inputs_embeds"
    got = [
        json.loads(line)
        for line in siger("timeseries", "predict", out, ts, "--json", "--runtime", "onnxruntime").splitlines()
    ]
    want = [json.loads(line) for line in siger("timeseries", "predict", tmp_path / "cls", ts, "--json").splitlines()]
    assert [g["class"] for g in got] == [w["class"] for w in want] and len(got) == 3
    for g, w in zip(got, want, strict=True):
        assert g["probabilities"]["sine"] == pytest.approx(w["probabilities"]["sine"], abs=1e-5)
