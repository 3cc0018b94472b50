"""The series adapter on synthetic data with known answers, streaming against the full forward,
normalisation, masks and padding, and the model folder."""

import json

import pytest
import torch

from sigerlm.assemble import build_model, load_model
from sigerlm.model.config import SigerConfig
from sigerlm_timeseries.adapter import SeriesError
from sigerlm_timeseries.hooks import SeriesOptions
from sigerlm_timeseries.stream import SeriesStream, predict

TRAIN = {"use": "train", "lr": 0.03, "progress": False, "plot": False, "valid_split": "test"}


def series_model(pm, seed=0, **options):
    torch.manual_seed(seed)
    spec = {"use": "series", "channels": 2, "classes": ["a", "b", "c"], **options}
    return build_model(pm, SigerConfig.from_profile("tiny"), spec).eval()


def test_a_sine_versus_square_classifier_reaches_100_percent(pm, run_manifest, synth, tmp_path):
    classes = ["sine", "square"]
    for split, seed in (("TRAIN", 0), ("TEST", 1)):
        series, labels = synth.sine_square(64, 48, seed)
        synth.write_ts(tmp_path / f"waves_{split}.ts", series, labels, classes)
    data = {"use": "ucr", "path": str(tmp_path / "waves"), "batch_size": 16}
    manifest = {
        "siger": 1,
        "name": "waves",
        "model": {"profile": "tiny", "adapter": {"use": "series", "channels": 1, "classes": classes}},
        "data": {"train": {**data, "split": "train"}, "test": {**data, "split": "test", "batch_size": 64}},
        "steps": [{**TRAIN, "max_steps": 100, "warmup_steps": 10}, {"use": "series-evaluate"}],
    }
    result = run_manifest(manifest, out_dir=tmp_path / "run")
    train, scores = (s["results"] for s in result.results["steps"])
    assert scores["accuracy"] == 1.0 and scores["macro_f1"] == 1.0
    assert train["valid_loss"] < 0.2 < train["prior_loss"]  # the class prior scores far worse
    confusion = json.loads((tmp_path / "run" / "confusion.json").read_text())
    assert confusion == {"classes": classes, "matrix": [[32, 0], [0, 32]], "split": "test"}
    meta = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert meta["adapter"]["classes"] == classes  # the class names live in the model folder


def test_a_classifier_without_classes_takes_the_training_files_in_their_order(pm, run_manifest, synth, tmp_path):
    classes = ["square", "sine", "triangle"]  # the file's @classLabel order, not sorted
    for split, seed in (("TRAIN", 0), ("TEST", 1)):
        series, labels = synth.sine_square(8, 16, seed)
        synth.write_ts(tmp_path / f"w_{split}.ts", series, labels, classes)
    data = {"use": "ucr", "path": str(tmp_path / "w"), "batch_size": 8}
    manifest = {
        "siger": 1,
        "name": "w",
        "model": {"profile": "tiny", "adapter": {"use": "series", "channels": 1}},
        "data": {"train": {**data, "split": "train"}, "test": {**data, "split": "test"}},
        "steps": [{**TRAIN, "max_steps": 2}, {"use": "series-evaluate"}],
    }
    run_manifest(manifest, out_dir=tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert meta["adapter"]["classes"] == classes
    model = load_model(tmp_path / "run" / "model", pm)
    assert model.adapter.classes == classes and model.adapter.readout.out_features == 3
    assert json.loads((tmp_path / "run" / "confusion.json").read_text())["classes"] == classes
    csv = {"use": "csv", "path": str(synth.write_sinusoid_csv(tmp_path / "s.csv", 60)), "window": 12}
    manifest["data"] = {"train": csv}
    with pytest.raises(Exception, match="has no classes: give model.adapter.classes"):
        run_manifest(manifest, out_dir=tmp_path / "run2")


def test_a_sinusoid_forecaster_beats_the_naive_forecast(pm, run_manifest, synth, tmp_path):
    path = synth.write_sinusoid_csv(tmp_path / "sine.csv", 240)
    data = {"use": "csv", "path": str(path), "columns": ["value"], "window": 24, "horizon": 6, "holdout": 24}
    manifest = {
        "siger": 1,
        "name": "sine",
        "model": {"profile": "tiny", "adapter": {"use": "series", "head": "forecast", "horizon": 6}},
        "data": {"train": {**data, "split": "train"}, "test": {**data, "split": "test"}},
        "steps": [{**TRAIN, "max_steps": 80}, {"use": "series-evaluate"}],
    }
    result = run_manifest(manifest, out_dir=tmp_path / "run")
    train, scores = (s["results"] for s in result.results["steps"])
    assert scores["windows"] == 4
    assert scores["naive_mase"] > 1.5 and scores["mase"] < 0.25 * scores["naive_mase"]
    assert train["valid_loss"] < train["naive_loss"]


@pytest.mark.parametrize(
    "options",
    [
        {"norm": "causal"},
        {"norm": "causal", "patch": 3, "readout": "mean"},
        {"norm": "none", "readout": "mean"},
        {"norm": "causal", "head": "forecast", "horizon": 4, "patch": 2},
        {"norm": "causal", "head": "forecast", "horizon": 5, "season": 3},
    ],
    ids=["causal", "patch-mean", "none-mean", "forecast-patch", "forecast-season"],
)
def test_streaming_step_by_step_equals_the_full_forward_at_every_position(pm, options):
    model = series_model(pm, **options)
    with torch.no_grad():  # a seasonal readout starts at zero: give it weights to stream
        model.adapter.readout.weight.normal_()
    p = model.adapter.patch
    values = torch.randn(3, 12, 2) * 5 + 3
    values[1, 4, 0] = float("nan")  # a missing value
    stream = SeriesStream(model, pm.get_component("runtimes", "torch").build(model), batch_size=3)
    outs = [stream.push(values[:, t]) for t in range(12)]
    assert all(o is None for t, o in enumerate(outs) if (t + 1) % p)
    for end in range(p, 13, p):  # the full forward over each prefix, as a batch classifier sees it
        prefix = {"values": values[:, :end]}
        with torch.no_grad():
            hidden = model.forward_hidden(model.adapter.embed(prefix))
            if options.get("head") == "forecast":
                expected = model.adapter.forecast(prefix, hidden)
            else:
                expected = model.adapter.class_logits(prefix, hidden).softmax(-1)
        torch.testing.assert_close(outs[end - 1], expected, rtol=1e-4, atol=1e-5)


def test_a_seasonal_forecaster_starts_as_the_seasonal_naive_forecast_and_learns_a_correction(pm):
    from sigerlm_timeseries.evaluate import seasonal_naive

    model = series_model(pm, head="forecast", horizon=5, season=3)
    values = torch.randn(2, 20, 2) * 4 + 10
    values[0, 17, 1] = float("nan")  # a missing value one season back: the forecast falls back to the mean
    runtime = pm.get_component("runtimes", "torch").build(model)
    with torch.no_grad():
        out = predict(model, runtime, values)
    expected = torch.from_numpy(seasonal_naive(values.numpy(), 5, 3)).float()
    mean = values[0, :, 1].nanmean()
    expected[0, [0, 3], 1] = mean  # steps 21 and 24 repeat step 18, which is missing
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-4)
    # the training target is the correction: a batch whose future is the seasonal-naive forecast has zero loss
    batch = {"values": values[1:], "target": torch.from_numpy(seasonal_naive(values[1:].numpy(), 5, 3)).float()}
    model.adapter.options.forecast_positions = "last"
    with torch.no_grad():
        hidden = model.forward_hidden(model.adapter.embed(batch))
        assert float(model.adapter.loss(batch, hidden)) < 1e-10
        batch["target"] = batch["target"] + 1
        assert float(model.adapter.loss(batch, hidden)) > 1e-3
    with pytest.raises(ValueError, match="season is an option of head 'forecast'"):
        SeriesOptions(classes=["a", "b"], season=4)


def test_instance_normalisation_makes_classes_scale_free_and_forecasts_come_back_in_scale(pm):
    values = torch.randn(2, 20, 2)
    classify = series_model(pm)
    with torch.no_grad():
        a = predict(classify, pm.get_component("runtimes", "torch").build(classify), values)
        b = predict(classify, pm.get_component("runtimes", "torch").build(classify), values * 50 - 7)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # the mean readout through the runtime's score equals the full forward's
        hidden = classify.forward_hidden(classify.adapter.embed({"values": values}))
        full = classify.adapter.class_logits({"values": values}, hidden).softmax(-1)
    torch.testing.assert_close(a, full, rtol=1e-5, atol=1e-6)
    model = series_model(pm, head="forecast", horizon=3)
    runtime = pm.get_component("runtimes", "torch").build(model)
    small, large = predict(model, runtime, values), predict(model, runtime, values * 50 - 7)
    assert small.shape == (2, 3, 2)
    torch.testing.assert_close(large, small * 50 - 7, rtol=1e-4, atol=1e-3)


def test_missing_values_and_padding_are_masked(pm):
    model = series_model(pm, norm="causal", readout="mean")
    values = torch.randn(1, 10, 2)
    holes = values.clone()
    holes[0, 3, 1] = float("nan")
    zeroed = values.clone()
    zeroed[0, 3, 1] = 123.0
    mask = torch.ones_like(values)
    mask[0, 3, 1] = 0
    with torch.no_grad():
        emb_nan = model.adapter.embed({"values": holes})
        emb_mask = model.adapter.embed({"values": zeroed, "mask": mask})
        torch.testing.assert_close(emb_nan, emb_mask)
        # a shorter series padded into a batch gets the logits it gets alone
        short = {"values": values[:, :6]}
        alone = model.adapter.class_logits(short, model.forward_hidden(model.adapter.embed(short)))
        padded = {
            "values": torch.cat([values[:, :6], torch.zeros(1, 4, 2)], 1).repeat(2, 1, 1),
            "mask": torch.cat([torch.ones(1, 6, 2), torch.zeros(1, 4, 2)], 1).repeat(2, 1, 1),
            "length": torch.tensor([6, 6]),
        }
        together = model.adapter.class_logits(padded, model.forward_hidden(model.adapter.embed(padded)))
    torch.testing.assert_close(together, alone.repeat(2, 1), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(emb_nan, model.adapter.embed({"values": zeroed}))


def test_a_model_folder_keeps_classes_and_outputs(pm, tmp_path):
    model = series_model(pm, patch=2)
    model.save(tmp_path / "model")
    loaded = load_model(tmp_path / "model", pm)
    assert loaded.adapter.classes == ["a", "b", "c"] and loaded.adapter.patch == 2
    values = {"values": torch.randn(2, 9, 2)}
    with torch.no_grad():
        for m in (model, loaded):
            m.out = m.adapter.class_logits(values, m.forward_hidden(m.adapter.embed(values)))
    torch.testing.assert_close(model.out, loaded.out)


def test_options_and_batches_are_checked(pm):
    with pytest.raises(ValueError, match="classify' needs at least 2 classes"):
        SeriesOptions(head="classify", classes=["only"])
    with pytest.raises(ValueError, match="extra"):
        SeriesOptions(classes=["a", "b"], chanels=2)
    model = series_model(pm)
    with pytest.raises(SeriesError, match="takes 2 channels, the batch has 3"):
        model.adapter.embed({"values": torch.zeros(1, 4, 3)})
    forecast = series_model(pm, head="forecast", patch=4)
    batch = {"values": torch.zeros(1, 6, 2), "target": torch.zeros(1, 1, 2)}
    with pytest.raises(SeriesError, match="multiple of the patch"):
        forecast(batch)
