"""The benchmarks still run (quick mode: tiny shapes, one round). Numbers are not checked here:
speed is measured by running the benchmarks, whose results are recorded in docs/performance.md."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_backbone_benchmark_quick(tmp_path):
    out = tmp_path / "backbone.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "backbone.py"),
            "--quick",
            "--threads",
            "1",
            "--out",
            str(out),
            "--impls",
            "siger",
            "reference",
            "gpt2",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    train = report["train"]["64"]
    assert {"siger", "reference"} <= set(train)
    assert all(row["tokens_per_s"] > 0 for row in train.values())
    decode = report["decode"]
    assert set(decode) == {"16", "64"}
    # the SSM's decode state does not grow with the context
    assert decode["16"]["siger"]["state_mb"] == decode["64"]["siger"]["state_mb"]
    if "gpt2" in decode["64"]:
        assert decode["64"]["gpt2"]["state_mb"] > decode["16"]["gpt2"]["state_mb"]


@pytest.mark.slow
def test_tokenization_benchmark_runs():
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "tokenization.py"),
            "--threads",
            "1",
            "--rounds",
            "1",
            "--limit-mb",
            "0.3",
            "--vocab-size",
            "2000",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| SigerLM BPE | 2000 |" in proc.stdout and "| tiktoken cl100k_base |" in proc.stdout


@pytest.mark.slow
def test_lora_benchmark_quick(tmp_path):
    out = tmp_path / "lora.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "lora.py"), "--quick", "--threads", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    full, lora = report["results"]["full"], report["results"]["lora"]
    assert lora["trainable"] < full["trainable"] == full["parameters"]
    assert lora["trainable_state_mb"] < full["trainable_state_mb"]
    assert 0 < report["ratios"]["trainable_fraction"] < 1


@pytest.mark.slow
def test_eval_benchmark_quick_runs_siger_and_gpt2_through_the_same_scorers():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "eval.py"), "--quick"], capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    for model in ("siger", "gpt2"):
        assert report[model]["stateful"]["tokens_per_s"] > 0 and report[model]["multiple_choice"]["items_per_s"] > 0
        # the same random document: both perplexities near the vocabulary size (random weights)
        assert 0.5 * report["vocab"] < report[model]["stateful"]["perplexity"] < 2 * report["vocab"]
    assert set(report["siger_over_gpt2"]) == {
        "stateful_tokens_per_s",
        "windowed_tokens_per_s",
        "multiple_choice_items_per_s",
    }
