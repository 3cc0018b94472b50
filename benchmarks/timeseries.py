"""sigerlm-timeseries against aeon's baselines, all in one run (results in docs/timeseries.md).

Classification, on the published train/test splits of UCR/UEA datasets bundled inside aeon:
test accuracy and training time of the SigerLM classifier (the `series` adapter trained by
core's `train` step through a manifest) against MiniRocket and 1-nearest-neighbour DTW; mean
accuracy and mean rank. Streaming: microseconds per sample of `step` against re-running the
classifier on the whole prefix, at prefix lengths 100 and 1000. Forecasting: MASE on the last
part of Airline and solar against seasonal-naive and aeon's AutoETS.

    python benchmarks/timeseries.py --threads 1 --out timeseries.json
    python benchmarks/timeseries.py --quick          # seconds: tiny training, two datasets

Needs aeon (the plugin's test extra). State the CPU and thread count with the figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

# The one recipe for every dataset: about 32 positions per series (patch = longest / 32), dropout
# 0.2 and train-time jitter (noise of 0.1 std); the norm per dataset: JapaneseVowels' channels are
# LPC coefficients whose levels identify the speaker, so they are not normalised away (the UCR
# series are z-normalised already).
CLASSIFICATION = {"GunPoint": "instance", "ArrowHead": "instance", "ItalyPowerDemand": "instance",
                  "BasicMotions": "instance", "JapaneseVowels": "none"}  # fmt: skip
FORECASTING = {
    # name: (column, season, window, horizon, holdout)
    "Airline": ("Passengers", 12, 36, 12, 24),
    "solar": ("solar_gen", 48, 96, 48, 48),
}


def plugin_manager():
    from sigerlm_testkit import add_plugin, kit_plugin_manager
    from sigerlm_timeseries import hooks

    pm = kit_plugin_manager()
    add_plugin(pm, hooks, "timeseries")
    return pm


def run(pm, manifest, out_dir):
    from sigerlm_testkit import run_manifest_with

    return run_manifest_with(pm, manifest, out_dir, force=True).results["steps"]


def siger_classifier(pm, name, steps, d_model, out_dir, prefixes=0.0):
    from sigerlm_timeseries.data import read_ts, ts_path

    data = read_ts(ts_path(name, None, "train"))
    norm = CLASSIFICATION[name]
    patch = max(1, round(max(len(s) for s in data.series) / 32))
    train = {"use": "ucr", "name": name, "split": "train", "batch_size": 16, "jitter": 0.1, "prefixes": prefixes}
    manifest = {
        "siger": 1,
        "name": f"bench-{name}",
        "seed": 0,
        "model": {
            "profile": "tiny",
            "config": {"d_model": d_model, "n_layers": 2, "d_state": 16, "dropout": 0.2},
            "adapter": {"use": "series", "channels": data.channels, "classes": data.class_names, "patch": patch,
                        "norm": norm},
        },
        "data": {"train": train, "test": {"use": "ucr", "name": name, "split": "test", "batch_size": 128}},
        "steps": [
            {"use": "train", "max_steps": steps, "lr": 0.005, "warmup_steps": 20, "valid_split": None,
             "progress": False, "plot": False, "save_model": None},
            {"use": "series-evaluate", "split": "test"},
        ],
    }  # fmt: skip
    trained, evaluated = run(pm, manifest, out_dir / name)
    scores = evaluated["results"]
    return {"accuracy": scores["accuracy"], "train_s": trained["seconds"], "patch": patch, **{
        k: v for k, v in scores.items() if k.startswith("prefix_accuracy")}}  # fmt: skip


def aeon_arrays(name):
    """(n, c, l) train and test arrays for aeon: unequal lengths padded with each series' last
    value to the longest series of both splits (MiniRocket needs one length)."""
    from sigerlm_timeseries.data import read_ts, ts_path

    splits = [read_ts(ts_path(name, None, split)) for split in ("train", "test")]
    length = max(len(s) for data in splits for s in data.series)
    out = []
    for data in splits:
        x = np.stack([np.concatenate([s, np.repeat(s[-1:], length - len(s), 0)]).T for s in data.series])
        out += [x, np.array(data.labels)]
    return out


def baselines(name):
    from aeon.classification.convolution_based import MiniRocketClassifier
    from aeon.classification.distance_based import KNeighborsTimeSeriesClassifier

    xtr, ytr, xte, yte = aeon_arrays(name)
    out = {}
    for key, clf in (
        ("minirocket", MiniRocketClassifier(random_state=0, n_jobs=1)),
        ("dtw_1nn", KNeighborsTimeSeriesClassifier(distance="dtw", n_neighbors=1, n_jobs=1)),
    ):
        warm = [int(np.flatnonzero(ytr == label)[0]) for label in np.unique(ytr)[:2]] * 2
        clf.fit(xtr[warm], ytr[warm])  # compile numba's functions first: training time, not compile time
        start = time.perf_counter()
        clf.fit(xtr, ytr)
        fit_s = time.perf_counter() - start
        acc = float((clf.predict(xte) == yte).mean())
        out[key] = {"accuracy": acc, "train_s": fit_s, "total_s": time.perf_counter() - start}
    return out


def streaming(pm, d_model, lengths=(100, 1000)):
    """Microseconds per sample: runtime.step with the state vs the full forward of the prefix."""
    import torch

    from sigerlm.assemble import build_model
    from sigerlm.model.config import SigerConfig
    from sigerlm_timeseries.stream import SeriesStream

    config = SigerConfig.from_profile("tiny", d_model=d_model, n_layers=2, d_state=16)
    spec = {"use": "series", "channels": 6, "classes": ["a", "b", "c", "d"], "norm": "causal"}
    model = build_model(pm, config, spec).eval()
    runtime = pm.get_component("runtimes", "torch").build(model)
    values = torch.randn(max(lengths) + 50, 6)
    stream = SeriesStream(model, runtime)
    times = []
    for t in range(len(values)):
        start = time.perf_counter()
        stream.push(values[t])
        times.append(time.perf_counter() - start)
    out = {}
    for length in lengths:
        window = times[length - 20 : length + 20]  # samples around that prefix length
        prefix = {"values": values[None, :length]}
        with torch.no_grad():
            model.adapter.class_logits(prefix, model.forward_hidden(model.adapter.embed(prefix)))
            start, rounds = time.perf_counter(), 5
            for _ in range(rounds):
                model.adapter.class_logits(prefix, model.forward_hidden(model.adapter.embed(prefix)))
        out[str(length)] = {
            "step_us": float(np.median(window) * 1e6),
            "rerun_prefix_us": (time.perf_counter() - start) / rounds * 1e6,
        }
    return out


def forecasting(pm, name, steps, d_model, out_dir, seasonal=True):
    from aeon.forecasting.stats import AutoETS

    from sigerlm_timeseries.data import csv_path, read_csv
    from sigerlm_timeseries.evaluate import mase

    column, season, window, horizon, holdout = FORECASTING[name]
    data = {"use": "csv", "name": name, "columns": [column], "window": window, "horizon": horizon,
            "holdout": holdout, "batch_size": 16}  # fmt: skip
    manifest = {
        "siger": 1,
        "name": f"bench-{name}",
        "seed": 0,
        "model": {
            "profile": "tiny",
            "config": {"d_model": d_model, "n_layers": 2, "d_state": 16},
            "adapter": {"use": "series", "head": "forecast", "horizon": horizon,
                        "season": season if seasonal else None},
        },
        "data": {"train": {**data, "split": "train"}, "test": {**data, "split": "test"}},
        "steps": [
            {"use": "train", "max_steps": steps, "lr": 0.005, "warmup_steps": 20, "valid_split": None,
             "progress": False, "plot": False, "save_model": None},
            {"use": "series-evaluate", "split": "test", "season": season},
        ],
    }  # fmt: skip
    trained, evaluated = run(pm, manifest, out_dir / name)
    scores = evaluated["results"]
    plain = None
    if seasonal:  # the same recipe without the seasonal-naive skip
        plain = forecasting(pm, name, steps, d_model, out_dir / "plain", seasonal=False)["siger_mase"]
    series, _ = read_csv(csv_path(name, None), [column])
    y = series[:, 0]
    train_end = len(y) - holdout
    scale = np.array([np.mean(np.abs(y[season:train_end] - y[: train_end - season]))])
    preds, truth = [], []
    start = time.perf_counter()
    for origin in range(train_end, len(y) - horizon + 1, horizon):
        preds.append(AutoETS(seasonal_period=season).iterative_forecast(y[:origin], horizon))
        truth.append(y[origin : origin + horizon])
    ets_s = time.perf_counter() - start
    ets = mase(np.array(preds)[..., None], np.array(truth)[..., None], scale)
    return {
        "siger_mase": scores["mase"],
        "siger_without_season_mase": plain,
        "seasonal_naive_mase": scores["naive_mase"],
        "ets_mase": ets,
        "siger_train_s": trained["seconds"],
        "ets_s": ets_s,
    }


def ranks(rows, methods):
    """Mean rank of each method over datasets (1 = best accuracy; ties share the mean rank)."""
    total = dict.fromkeys(methods, 0.0)
    for row in rows.values():
        accs = {m: row[m]["accuracy"] for m in methods}
        for m in methods:
            better = sum(1 for o in methods if accs[o] > accs[m])
            ties = sum(1 for o in methods if accs[o] == accs[m])
            total[m] += better + (ties + 1) / 2
    return {m: total[m] / len(rows) for m in methods}


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=600, help="training steps per classifier / forecaster")
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--datasets", nargs="*", default=list(CLASSIFICATION))
    parser.add_argument("--series", nargs="*", default=list(FORECASTING))
    parser.add_argument("--prefixes", type=float, default=0.0, help="share of training series cut to random prefixes")
    parser.add_argument("--quick", action="store_true", help="a few steps, two datasets, no forecasting baselines")
    parser.add_argument("--no-baselines", dest="baselines", action="store_false", help="SigerLM rows only")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.steps, args.d_model, args.datasets, args.series = 5, 16, ["ItalyPowerDemand", "BasicMotions"], []

    import torch

    torch.set_num_threads(args.threads)
    pm = plugin_manager()
    report = {"cpu": cpu_name(), "threads": args.threads, "steps": args.steps, "d_model": args.d_model}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            row = {"siger": siger_classifier(pm, name, args.steps, args.d_model, Path(tmp), args.prefixes)}
            if args.baselines:
                row.update(baselines(name))
            rows[name] = row
            print(name, json.dumps(row), flush=True)
        report["classification"] = rows
        methods = ["siger", "minirocket", "dtw_1nn"]
        if rows and args.baselines:  # --datasets with no names: forecasting only
            report["mean_accuracy"] = {m: float(np.mean([r[m]["accuracy"] for r in rows.values()])) for m in methods}
            report["mean_rank"] = ranks(rows, methods)
            report["streaming"] = streaming(pm, args.d_model, (100, 1000) if not args.quick else (20, 60))
            print("streaming", json.dumps(report["streaming"]), flush=True)
        report["forecasting"] = {
            name: forecasting(pm, name, args.steps, args.d_model, Path(tmp)) for name in args.series
        }
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
