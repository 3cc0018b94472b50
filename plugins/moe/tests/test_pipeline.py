"""Adaptive sizing with simulated hardware and losses, the gate, and the staged pipeline (dense ->
gate -> moe-resolve -> MoE warm-started -> gate) on the test kit's data, resumable."""

import json
import logging

import pytest

from sigerlm_moe import hooks
from sigerlm_moe.sizing import Hardware, resolve_sizing
from sigerlm_moe.steps import GateClosed
from sigerlm_testkit import add_plugin

VPS = Hardware(cpu_cores=2, ram_gb=4)
WORKSTATION = Hardware(cpu_cores=16, ram_gb=64)
GPU = Hardware(cpu_cores=16, ram_gb=64, cuda_memory_gb=[24])
CLUSTER = Hardware(cpu_cores=64, ram_gb=512, cuda_memory_gb=[80, 80])


@pytest.mark.parametrize(
    ("hw", "losses", "expected", "state"),
    [
        (VPS, None, (4, 1, 4), "unknown"),  # low-resource CPU: few experts, top-1, MoE on fewer layers
        (WORKSTATION, None, (8, 1, 2), "unknown"),
        (GPU, [5.0, 4.5], (8, 2, 2), "baseline"),  # standard CUDA: moderate experts, top-2
        (CLUSTER, [5.0, 4.5], (16, 2, 1), "baseline"),  # large CUDA: more experts, every layer
        (GPU, [7.5], (4, 1, 2), "unstable"),  # loss too high: shrink, top-1
        (GPU, [4.0, 4.2], (4, 1, 2), "unstable"),  # loss rising: shrink
        (GPU, [3.2], (16, 2, 2), "mature"),  # mature: more capacity
        (CLUSTER, [3.2], (16, 2, 1), "mature"),  # 32 clamped to max_experts 16
        (VPS, [7.5], (2, 1, 4), "unstable"),  # 4 // 2 = 2, the lower bound
    ],
)
def test_the_resolver_on_simulated_hardware_and_losses(hw, losses, expected, state):
    sizing = resolve_sizing(hw, losses)
    assert (sizing.n_experts, sizing.top_k, sizing.moe_every) == expected
    assert sizing.loss_state == state and sizing.reasons


def test_the_resolver_respects_bounds_and_memory():
    assert resolve_sizing(CLUSTER, [3.0], max_experts=8).n_experts == 8
    assert resolve_sizing(VPS, [9.0], min_experts=3).n_experts == 3
    small_gpu = Hardware(cpu_cores=16, ram_gb=64, cuda_memory_gb=[0.2])  # 8 experts on 5 layers need 0.26 GB
    sizing = resolve_sizing(small_gpu, None)
    assert sizing.n_experts < 8 and any("to fit" in r for r in sizing.reasons)


@pytest.fixture
def pm(plugin_manager):
    add_plugin(plugin_manager, hooks, "moe")
    return plugin_manager


DATA = {"use": "random-tokens", "vocab_size": 64, "seq_len": 16, "batch_size": 4, "num_batches": 4}
SHRINK = {"d_model": 16, "n_layers": 4, "d_state": 4, "max_seq_len": 16}
ADAPTER = {"use": "random-embedding", "vocab_size": 64}
TRAIN = {"max_steps": 3, "lr": 0.01, "eval_every": 1, "eval_batches": 1, "progress": False, "plot": False}


def pipeline(**changes):
    steps = [
        {
            "use": "stage",
            "name": "dense",
            "model": {"profile": "moe_dense_base", "config": SHRINK, "adapter": ADAPTER},
            "train": TRAIN,
        },
        {"use": "gate", "stage": "dense", "min_steps": 3, "max_valid_loss": 10.0},
        {
            "use": "moe-resolve",
            "stage": "dense",
            "hardware": {"cpu_cores": 2, "ram_gb": 4},
            "d_model": 16,
            "n_layers": 4,
        },
        {
            "use": "stage",
            "name": "moe",
            "sizing": True,
            "model": {
                "profile": "small_moe",
                "config": SHRINK,
                "adapter": ADAPTER,
                "init_from": {"path": "${out}/stages/dense/model", "strict": False},
            },
            "train": TRAIN,
        },
        {"use": "gate", "stage": "moe", "against": "dense", "max_loss_delta": 1.0, **changes},
    ]
    return {"siger": 1, "name": "pipe", "data": {"train": DATA, "valid": dict(DATA, num_batches=1)}, "steps": steps}


def test_the_staged_pipeline_runs_warm_starts_with_the_resolved_size_and_resumes(pm, run_manifest, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="sigerlm"):
        result = run_manifest(pipeline(), out_dir=tmp_path / "run")
    steps = [s["results"] for s in result.results["steps"]]
    assert steps[1]["passed"] and steps[4]["passed"]
    assert {k: steps[2][k] for k in ("n_experts", "top_k", "moe_every", "tier")} == {
        "n_experts": 4,
        "top_k": 1,
        "moe_every": 4,
        "tier": "cpu-small",
    }
    assert "moe-resolve: hardware 2 cores, 4.0 GB RAM" in caplog.text
    decision = json.loads((tmp_path / "run" / "moe-sizing.json").read_text())
    assert decision["hardware"]["source"] == "given" and len(decision["valid_losses"]) == 3
    config = json.loads((tmp_path / "run" / "stages" / "moe" / "model" / "config.json").read_text())
    assert config["backbone"]["block"] == "moe:moe"
    assert {(b["n_experts"], b["top_k"], b["moe_every"]) for b in config["blocks"]} == {(4, 1, 4)}
    moe_rows = (tmp_path / "run" / "stages" / "moe" / "metrics.jsonl").read_text()
    assert "moe_dead" in moe_rows
    assert "warm start from" in caplog.text
    # a gate that fails names the stage, the condition and the numbers; the run can continue after
    with pytest.raises(GateClosed, match=r"stage 'moe' trained 3 steps, the gate needs 100"):
        run_manifest(pipeline(min_steps=100), out_dir=tmp_path / "closed")
    record = json.loads((tmp_path / "closed" / "run.json").read_text())
    assert record["status"] == "failed" and record["completed_steps"] == [0, 1, 2, 3]
    # resuming skips the finished stages (their folders are runs of their own) and fails at the gate again
    with pytest.raises(GateClosed):
        run_manifest(pipeline(min_steps=100), out_dir=tmp_path / "closed", resume=True)
    warned = run_manifest(pipeline(min_steps=100, on_fail="warn"), out_dir=tmp_path / "warned")
    assert warned.results["steps"][4]["results"]["passed"] is False


def test_the_plateau_gate_and_a_stage_that_did_not_run(pm, run_manifest, tmp_path):
    spec = pipeline(plateau_window=2, plateau_delta=100.0)
    spec["steps"] = spec["steps"][:1] + [{"use": "gate", "stage": "dense", "plateau_window": 2, "plateau_delta": 100.0}]
    assert run_manifest(spec, out_dir=tmp_path / "a").results["steps"][1]["results"]["passed"]
    spec["steps"][1] = {"use": "gate", "stage": "dense", "plateau_window": 2, "plateau_delta": 0.0}
    with pytest.raises(GateClosed, match="has not plateaued"):
        run_manifest(spec, out_dir=tmp_path / "b")
    spec["steps"][1] = {"use": "gate", "stage": "nothing", "min_steps": 1}
    with pytest.raises(GateClosed, match="stage 'nothing' has no metrics"):
        run_manifest(spec, out_dir=tmp_path / "c")
