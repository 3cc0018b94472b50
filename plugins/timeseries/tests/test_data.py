"""The ucr and csv datasets: bundled and file data, padding and masks, shards, and errors that
name the file, line and column."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sigerlm_timeseries.data import SeriesDataError, read_csv, read_ts
from sigerlm_timeseries.hooks import CsvOptions, UcrOptions


def fake_run(rank=0, world_size=1, classes=None):
    def component(*path):
        if classes is None:
            raise KeyError(path)
        return SimpleNamespace(options=SimpleNamespace(classes=classes))

    return SimpleNamespace(seed=0, rank=rank, world_size=world_size, component=component)


def ucr(run=None, **options):
    from sigerlm_timeseries.hooks import ucr_dataset

    return ucr_dataset(run or fake_run(), UcrOptions(**options))


def test_a_bundled_dataset_loads_with_the_published_split():
    train, test = ucr(name="GunPoint", split="train"), ucr(name="GunPoint", split="test")
    assert (len(train.examples), len(test.examples)) == (50, 150)
    assert train.class_names == ["1", "2"]
    batch = next(iter(test))
    assert batch["values"].shape == (16, 150, 1) and batch["label"].dtype == torch.long
    assert not test.shuffle and train.shuffle


def test_prefix_training_cuts_a_share_of_the_train_series_and_never_the_test_split():
    full = next(iter(ucr(name="GunPoint", split="train", batch_size=50, shuffle=False)))
    cut = ucr(name="GunPoint", split="train", batch_size=50, shuffle=False, prefixes=0.5, min_prefix=0.2)
    batch = next(iter(cut))
    length = batch["length"]
    shorter = length < 150
    assert 10 <= int(shorter.sum()) <= 40 and int(length.min()) >= 30  # about half, none below 20%
    assert torch.equal(batch["label"], full["label"])  # a prefix keeps its series' label
    for row in torch.nonzero(shorter).flatten().tolist():  # a prefix is the start of its series, then padding
        k = int(length[row])
        assert torch.equal(batch["values"][row, :k], full["values"][row, :k])
        assert batch["mask"][row, k:].sum() == 0
    cut.set_epoch(1)
    assert not torch.equal(next(iter(cut))["length"], length)  # new prefixes each epoch
    test = ucr(name="GunPoint", split="test", batch_size=150, prefixes=1.0)
    assert bool((next(iter(test))["length"] == 150).all())


def test_variable_length_multivariate_series_are_padded_and_masked():
    data = ucr(name="JapaneseVowels", split="train", batch_size=270, shuffle=False)
    batch = next(iter(data))
    lengths = batch["length"]
    assert batch["values"].shape == (270, int(lengths.max()), 12) and int(lengths.min()) < int(lengths.max())
    short = int(lengths.argmin())
    assert batch["mask"][short, : lengths[short]].all() and not batch["mask"][short, lengths[short] :].any()
    assert data.class_names == [str(i) for i in range(1, 10)]


def test_ranks_take_disjoint_shares_and_the_model_classes_order_labels(tmp_path, synth):
    shares = [list(ucr(fake_run(r, 2), name="GunPoint", split="test", batch_size=8)) for r in range(2)]
    firsts = [s[0]["values"][:, :3, 0] for s in shares]
    assert firsts[0].shape == (8, 3) and not torch.equal(firsts[0], firsts[1])
    assert sum(len(b["label"]) for s in shares for b in s) == 150
    series, labels = synth.sine_square(4, 8, 0)
    synth.write_ts(tmp_path / "w.ts", series, labels, ["sine", "square"])
    reversed_ = ucr(fake_run(classes=["square", "sine"]), path=str(tmp_path / "w.ts"), shuffle=False)
    assert next(iter(reversed_))["label"].tolist() == [1, 0, 1, 0]
    with pytest.raises(SeriesDataError, match=r"w.ts:\d+: class 'sine' is not one of the model's \['a', 'b'\]"):
        ucr(fake_run(classes=["a", "b"]), path=str(tmp_path / "w.ts"))


def test_missing_values_in_a_ts_file_are_masked(tmp_path):
    path = tmp_path / "m.ts"
    path.write_text("@problemName m\n@classLabel true x y\n@data\n1,?,3:4,5,6:x\n1,2:3,NaN:y\n")
    data = read_ts(path)
    assert data.channels == 2 and np.isnan(data.series[0][1, 0]) and data.series[1].shape == (2, 2)
    batch = next(iter(ucr(path=str(path), shuffle=False)))
    assert batch["mask"][0, :, 0].tolist() == [1, 0, 1] and batch["mask"][1, 2].tolist() == [0, 0]
    assert batch["values"][0, 1, 0] == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("@data\n1,2,x3:a\n", r"bad.ts:2:5: dimension 1, value 3: cannot read 'x3' as a number"),
        (
            "@classLabel true a b\n@data\n1,2:3:a\n1,2:1,oops:b\n",
            r"bad.ts:4:7: dimension 2, value 2: cannot",
        ),
        ("@classLabel true a b\n@data\n1,2:c\n", r"bad.ts:3:5: class 'c' is not one of @classLabel \['a', 'b'\]"),
        ("@classLabel true a b\n@data\n1:2:a\n1:b\n", r"bad.ts:4:1: 1 dimensions, the first series has 2"),
        ("1,2,3\n", r"bad.ts:1:1: expected an @header or @data"),
        ("@problemName x\n", r"bad.ts: no @data line"),
    ],
    ids=["number", "second-dimension", "class", "dimensions", "no-header", "no-data"],
)
def test_bad_ts_files_name_file_line_and_column(tmp_path, text, message):
    path = tmp_path / "bad.ts"
    path.write_text(text)
    with pytest.raises(SeriesDataError, match=message):
        read_ts(path)


def test_csv_windows_split_train_and_holdout(tmp_path, synth):
    from sigerlm_timeseries.hooks import csv_dataset

    path = synth.write_sinusoid_csv(tmp_path / "s.csv", 100)
    options = {"path": str(path), "columns": ["value"], "window": 20, "horizon": 5, "holdout": 10}
    train = csv_dataset(fake_run(), CsvOptions(**options, stride=2))
    test = csv_dataset(fake_run(), CsvOptions(**options, split="test"))
    assert [e["origin"] for e in test.examples] == [90, 95]
    assert max(e["origin"] for e in train.examples) + 5 <= 90  # no training target reaches the holdout
    batch = next(iter(test))
    assert batch["values"].shape == (2, 20, 1) and batch["target"].shape == (2, 5, 1)
    np.testing.assert_allclose(batch["target"][0, :, 0].numpy(), test.series[90:95, 0], rtol=1e-6)
    assert test.mase_scale(12).shape == (1,)
    data, columns = read_csv(path)
    assert columns == ["time", "value"] and data.shape == (100, 2)
    bundled = csv_dataset(fake_run(), CsvOptions(name="Airline", window=36, horizon=12, holdout=24, split="test"))
    assert bundled.columns == ["Passengers"] and len(bundled.examples) == 2


@pytest.mark.parametrize(
    ("text", "columns", "message"),
    [
        ("a,b\n1,2\n3,x\n", ["a", "b"], r"bad.csv:3:2: column 'b': cannot read 'x' as a number"),
        ("a,b\n1,2\n3\n", None, r"bad.csv:3: 1 cells, the header has 2 columns"),
        ("a,b\n1,2\n", ["c"], r"bad.csv:1: no column 'c' \(columns: a, b\)"),
        ("a,b\nx,y\n", None, r"bad.csv: no numeric column"),
    ],
    ids=["number", "cells", "column", "numeric"],
)
def test_bad_csv_files_name_file_line_and_column(tmp_path, text, columns, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(SeriesDataError, match=message):
        read_csv(path, columns)


def test_sources_are_checked():
    with pytest.raises(ValueError, match="exactly one of name"):
        UcrOptions()
    with pytest.raises(SeriesDataError, match="aeon bundles no dataset 'Nope'"):
        ucr(name="Nope")
    with pytest.raises(SeriesDataError, match="no such .ts file"):
        ucr(path="/nonexistent/x")
