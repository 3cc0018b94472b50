"""An MoE model through the rest of the lifecycle: exact resume from a checkpoint, decoding with a
runtime, LoRA on the expert projections."""

import json
import shutil

import pytest
import torch

from sigerlm.assemble import load_model
from sigerlm_moe import hooks
from sigerlm_testkit import add_plugin

DATA = {"use": "random-tokens", "vocab_size": 64, "seq_len": 16, "batch_size": 4, "num_batches": 8}
SHRINK = {"d_model": 16, "n_layers": 4, "d_state": 4, "max_seq_len": 16}
ADAPTER = {"use": "random-embedding", "vocab_size": 64}


@pytest.fixture
def pm(plugin_manager):
    add_plugin(plugin_manager, hooks, "moe")
    return plugin_manager


def manifest(**train):
    options = {"use": "train", "max_steps": 4, "lr": 0.01, "progress": False, "plot": False, **train}
    block = {"use": "moe", "n_experts": 4, "top_k": 2, "capacity_factor": 1.0, "jitter": 0.1}
    return {
        "siger": 1,
        "name": "moe-life",
        "model": {"profile": "tiny", "config": SHRINK, "block": block, "adapter": ADAPTER},
        "data": {"train": DATA},
        "steps": [options],
    }


def losses(folder):
    return [json.loads(line)["loss"] for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_a_killed_moe_run_resumes_to_the_same_losses(pm, run_manifest, tmp_path):
    spec = manifest(checkpoint_every=2, keep_checkpoints=3)
    run_manifest(spec, out_dir=tmp_path / "full")
    # the same run, killed after step 2's checkpoint: newer checkpoints and the model are gone
    killed = tmp_path / "killed"
    shutil.copytree(tmp_path / "full", killed)
    shutil.rmtree(killed / "checkpoints" / "step-00000004")
    shutil.rmtree(killed / "model")
    record = json.loads((killed / "run.json").read_text())
    record.update(status="failed", completed_steps=[])
    (killed / "run.json").write_text(json.dumps(record))
    run_manifest(spec, out_dir=killed, resume=True)
    torch.testing.assert_close(losses(killed), losses(tmp_path / "full"), rtol=0, atol=1e-6)


def test_decoding_an_moe_model_with_the_runtime_equals_the_full_forward(pm, run_manifest, tmp_path):
    run_manifest(manifest(max_steps=2), out_dir=tmp_path / "run")
    model = load_model(tmp_path / "run" / "model", pm)
    ids = torch.randint(0, 64, (2, 10))
    runtime = pm.get_component("runtimes", "torch").build(model)
    with torch.no_grad():
        full = model.adapter.head(model.forward_hidden(model.adapter.embed({"input_ids": ids})))
        out, state = runtime.prefill({"input_ids": ids[:, :4]})
        steps = [out]
        for t in range(4, 10):
            out, state = runtime.step({"input_ids": ids[:, t]}, state)
            steps.append(out)
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 3:], rtol=1e-5, atol=1e-5)
    sizes = [tuple(s.shape) for layer_state in state for s in layer_state]
    assert sizes == [tuple(s.shape) for layer_state in model.init_state(2) for s in layer_state]  # no growth


def test_lora_adapts_the_expert_projections_of_an_moe_model(pm, run_manifest, tmp_path):
    from sigerlm_lora import hooks as lora_hooks

    add_plugin(pm, lora_hooks, "lora")
    run_manifest(manifest(max_steps=2), out_dir=tmp_path / "base")
    tune = {
        "siger": 1,
        "name": "moe-lora",
        "model": {
            "init_from": str(tmp_path / "base" / "model"),
            "transforms": [{"use": "lora", "rank": 2, "targets": ["up", "down", "in_proj"]}],
        },
        "data": {"train": DATA},
        "steps": [
            {"use": "train", "max_steps": 2, "lr": 0.01, "progress": False, "plot": False, "save_model": "adapter"}
        ],
    }
    result = run_manifest(tune, out_dir=tmp_path / "tune")
    summary = result.results["steps"][0]["results"]
    assert 0 < summary["trainable_parameters"] < summary["parameters"]
    from safetensors import safe_open

    adapter_files = list((tmp_path / "tune" / "adapter").glob("*.safetensors"))
    with safe_open(str(adapter_files[0]), "pt") as f:
        names = list(f.keys())
    assert any(".moe.experts.0.up." in n for n in names) and any(".moe.experts.3.down." in n for n in names)
