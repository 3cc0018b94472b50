"""benchmarks/timeseries.py still runs (quick mode: a few steps, two datasets). Figures are not
checked here; they are recorded in docs/timeseries.md."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_timeseries_benchmark_quick(tmp_path):
    out = tmp_path / "timeseries.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "timeseries.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert set(report["classification"]) == {"ItalyPowerDemand", "BasicMotions"}
    assert set(report["mean_rank"]) == {"siger", "minirocket", "dtw_1nn"}
    assert sum(report["mean_rank"].values()) == pytest.approx(6.0)  # ranks 1 + 2 + 3 per dataset
    assert all(row["step_us"] > 0 for row in report["streaming"].values())
