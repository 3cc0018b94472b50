"""Fixtures of the plugin's tests: synthetic series with known answers, written as the files
the datasets read, and a plugin manager with this plugin."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest_plugins = ["sigerlm_testkit"]


def sine_square(n: int, length: int, seed: int) -> tuple[list[np.ndarray], list[str]]:
    """Half sines, half square waves (the sign of a sine), random frequency, phase, offset and scale."""
    rng = np.random.default_rng(seed)
    series, labels = [], []
    for i in range(n):
        t = np.arange(length)
        wave = np.sin(2 * np.pi * rng.uniform(1.5, 4) * t / length + rng.uniform(0, 2 * np.pi))
        kind = "square" if i % 2 else "sine"
        wave = np.sign(wave) if kind == "square" else wave
        series.append((wave * rng.uniform(0.5, 3) + rng.uniform(-2, 2))[:, None])
        labels.append(kind)
    return series, labels


def write_ts(path: Path, series: list[np.ndarray], labels: list[str], classes: list[str]) -> Path:
    lines = ["@problemName synthetic", f"@univariate {'true' if series[0].shape[1] == 1 else 'false'}"]
    lines += [f"@dimensions {series[0].shape[1]}", f"@classLabel true {' '.join(classes)}", "@data"]
    for s, label in zip(series, labels, strict=True):
        dims = [",".join("?" if np.isnan(v) else f"{v:.6f}" for v in s[:, d]) for d in range(s.shape[1])]
        lines.append(":".join(dims) + f":{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_sinusoid_csv(path: Path, steps: int, period: int = 12) -> Path:
    t = np.arange(steps)
    values = 100 + 20 * np.sin(2 * np.pi * t / period)
    path.write_text("time,value\n" + "".join(f"{i},{v:.6f}\n" for i, v in zip(t, values, strict=True)))
    return path


@pytest.fixture
def synth():
    return SimpleNamespace(sine_square=sine_square, write_ts=write_ts, write_sinusoid_csv=write_sinusoid_csv)


@pytest.fixture
def pm(plugin_manager):
    from sigerlm_testkit import add_plugin
    from sigerlm_timeseries import hooks

    add_plugin(plugin_manager, hooks, "timeseries")
    return plugin_manager
