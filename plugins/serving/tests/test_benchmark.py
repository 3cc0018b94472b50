"""benchmarks/serve.py --quick runs end to end and reports its rows and ratios."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_serve_benchmark_quick(tmp_path):
    out = tmp_path / "serve.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "serve.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert [(r["mode"], r["clients"]) for r in report["rows"]] == [("batched", 1), ("batched", 4), ("one-at-a-time", 4)]
    assert all(r["errors"] == 0 and r["tokens_per_s"] > 0 for r in report["rows"])
    assert report["batched_over_one_at_a_time"] > 0 and "| batched | 4 |" in done.stdout
