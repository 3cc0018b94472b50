"""``siger timeseries stream|predict`` on a saved model, the evaluators through the registry,
and the metrics against hand-computed answers."""

import json

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from sigerlm.assemble import build_model
from sigerlm.model.config import SigerConfig
from sigerlm_timeseries.cli import app
from sigerlm_timeseries.evaluate import confusion_matrix, macro_f1, mase, seasonal_naive


@pytest.fixture
def saved(pm, tmp_path, synth, monkeypatch):
    """A saved classifier (causal norm, patch 2) and a .ts file of 3 series; the CLI's plugin
    manager is this test's one."""
    import sigerlm.plugins

    monkeypatch.setattr(sigerlm.plugins, "make_plugin_manager", lambda *a, **k: pm)
    torch.manual_seed(0)
    spec = {"use": "series", "channels": 1, "classes": ["sine", "square"], "norm": "causal", "patch": 2}
    model = build_model(pm, SigerConfig.from_profile("tiny"), spec).eval()
    model.save(tmp_path / "model")
    series, labels = synth.sine_square(3, 10, 0)
    synth.write_ts(tmp_path / "w.ts", series, labels, ["sine", "square"])
    return model, tmp_path


def cli(*args):
    root = typer.Typer()
    root.add_typer(app, name="timeseries")
    result = CliRunner().invoke(root, ["timeseries", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


def test_stream_prints_running_probabilities_that_end_at_the_whole_series_prediction(saved):
    model, folder = saved
    rows = [
        json.loads(line)
        for line in cli("stream", folder / "model", folder / "w.ts", "--series", 1, "--json").splitlines()
    ]
    assert [r["t"] for r in rows] == [2, 4, 6, 8, 10]  # one output per patch of 2 samples
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-5 and r["us"] > 0 for r in rows)
    predicted = [json.loads(line) for line in cli("predict", folder / "model", folder / "w.ts", "--json").splitlines()]
    assert [p["label"] for p in predicted] == ["sine", "square", "sine"]
    for key in ("sine", "square"):
        assert rows[-1]["probabilities"][key] == pytest.approx(predicted[1]["probabilities"][key], abs=1e-5)
    text = cli("predict", folder / "model", folder / "w.ts")
    assert text.splitlines()[-1].startswith("accuracy ") and "true square" in text
    assert cli("stream", folder / "model", folder / "w.ts").splitlines()[-1] == "true class: sine"


def test_predict_and_stream_a_forecaster_on_a_csv(pm, tmp_path, synth, monkeypatch):
    import sigerlm.plugins

    monkeypatch.setattr(sigerlm.plugins, "make_plugin_manager", lambda *a, **k: pm)
    spec = {"use": "series", "head": "forecast", "horizon": 3}
    build_model(pm, SigerConfig.from_profile("tiny"), spec).save(tmp_path / "model")
    path = synth.write_sinusoid_csv(tmp_path / "s.csv", 30)
    out = cli("predict", tmp_path / "model", path, "--columns", "value").splitlines()
    assert [line.split()[0] for line in out] == ["+1", "+2", "+3"]
    last = cli("predict", tmp_path / "model", path, "--columns", "value", "--context", 12).splitlines()
    cut = tmp_path / "cut.csv"
    cut.write_text("\n".join(path.read_text().splitlines()[:1] + path.read_text().splitlines()[-12:]) + "\n")
    assert cli("predict", tmp_path / "model", cut, "--columns", "value").splitlines() == last != out
    rows = [
        json.loads(line)
        for line in cli("stream", tmp_path / "model", path, "--columns", "value", "--json").splitlines()
    ]
    assert len(rows) == 30 and np.array(rows[-1]["forecast"]).shape == (3, 1)
    root = typer.Typer()
    root.add_typer(app, name="timeseries")
    wrong = CliRunner().invoke(root, ["timeseries", "predict", str(tmp_path / "model"), str(path)])
    assert wrong.exit_code != 0 and "has 2 channels, the model takes 1" in wrong.output


def test_evaluators_are_registered_with_the_run_signature(pm, tmp_path):
    from sigerlm.manifest import load_manifest
    from sigerlm.run import Run

    manifest = {
        "siger": 1,
        "name": "eval",
        "model": {"profile": "tiny", "adapter": {"use": "series", "channels": 1, "classes": ["1", "2"]}},
        "data": {"test": {"use": "ucr", "name": "ItalyPowerDemand", "split": "test", "limit": 40, "batch_size": 16}},
        "steps": [{"use": "series-evaluate", "prefixes": [0.5, 1.0]}],
    }
    resolved, _ = load_manifest(manifest, [f"out_dir={tmp_path / 'run'}"], pm=pm)
    (tmp_path / "run").mkdir()
    run = Run(resolved, tmp_path / "run", pm)
    direct = pm.get_component("evaluators", "series-classification").build(run, options={"prefixes": [0.5, 1.0]})
    step = pm.get_component("steps", "series-evaluate").build(run, options={"prefixes": [0.5, 1.0]})
    assert set(direct) == {"accuracy", "macro_f1", "series", "prefix_accuracy_50", "prefix_accuracy_100"}
    assert direct == step and direct["series"] == 40 and all(isinstance(v, float) for v in direct.values())
    confusion = json.loads((tmp_path / "run" / "confusion.json").read_text())
    assert np.array(confusion["matrix"]).sum() == 40
    with pytest.raises(Exception, match="needs a model with the series adapter's 'forecast' head"):
        pm.get_component("evaluators", "series-forecast").build(run, options={})


def test_metrics_equal_hand_computed_answers():
    m = confusion_matrix([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 3)
    assert m.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    # F1: class 0 = 2*1/(2+1+1) = 0.5, class 1 = 2*2/(4+1+0) = 0.8, class 2 = 0
    assert macro_f1(m) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    pred, truth = np.array([[[1.0], [2.0]]]), np.array([[[2.0], [4.0]]])
    assert mase(pred, truth, np.array([0.5])) == pytest.approx(3.0)  # mean |error| 1.5 / 0.5
    context = np.arange(8.0).reshape(1, 8, 1)
    assert seasonal_naive(context, 5, 3)[0, :, 0].tolist() == [5, 6, 7, 5, 6]
