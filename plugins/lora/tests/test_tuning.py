"""Tuning an adapter through a manifest: only the adapter trains, is checkpointed and saved."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sigerlm import hookimpl
from sigerlm.model.checkpoint import read_tensors
from sigerlm.plugins import make_plugin_manager
from sigerlm_lora import LoraError, load_adapter, read_adapter, set_adapter
from sigerlm_testkit import manifest_test_overrides, run_manifest_with
from sigerlm_text.model import lm_forward, load_text_model

REPO = Path(__file__).resolve().parents[3]
TEMPLATES = [
    {"name": "lampung_to_id", "instruction": "Terjemahkan ke bahasa Indonesia: {lampung}", "output": "{indonesian}"},
    {"name": "id_to_lampung", "instruction": "Terjemahkan ke bahasa Lampung: {indonesian}", "output": "{lampung}"},
]
CAPTURED: dict = {}


class Capture:
    """A step that keeps the run's trained model, to compare its tensors with the base's."""

    @hookimpl
    def register_steps(self, register):
        from pydantic import BaseModel, ConfigDict

        class Options(BaseModel):
            model_config = ConfigDict(extra="forbid")

        def capture(run, options):
            CAPTURED["model"] = run.state["model"]
            return {}

        register("capture", capture, options=Options)


def manager():
    pm = make_plugin_manager(load=["text", "lora"], required=["text", "lora"])
    from sigerlm_testkit import add_plugin

    add_plugin(pm, Capture(), "capture")
    return pm


def manifest(base_dir, pairs_file, **train):
    return {
        "siger": 1,
        "name": "tune",
        "plugins": ["text", "lora"],
        "model": {"init_from": str(base_dir), "transforms": [{"use": "lora", "rank": 4, "alpha": 8}]},
        "data": {
            "train": {
                "use": "instruction_jsonl",
                "files": [str(pairs_file)],
                "templates": TEMPLATES,
                "batch_size": 4,
                "seq_len": 48,
            }
        },
        "steps": [
            {
                "use": "eval-generation",
                "name": "before",
                "files": [str(pairs_file)],
                "templates": TEMPLATES,
                "limit": 4,
                "max_new_tokens": 6,
            },
            {"use": "train", "lr": 0.01, "save_model": "adapter", "progress": False, "plot": False, **train},
            {
                "use": "eval-generation",
                "name": "after",
                "files": [str(pairs_file)],
                "templates": TEMPLATES,
                "limit": 4,
                "max_new_tokens": 6,
            },
            {"use": "capture"},
        ],
    }


def test_tuning_trains_only_the_adapter(base_dir, pairs_file, tmp_path):
    base = read_tensors(base_dir / "model.safetensors")
    result = run_manifest_with(
        manager(), manifest(base_dir, pairs_file, max_steps=4, checkpoint_every=2), tmp_path / "run"
    )
    assert result.status == "finished"
    trained = CAPTURED.pop("model")
    state = trained.state_dict()
    # every base tensor is bit-identical to the base folder's; only adapter tensors changed
    for name, tensor in base.items():
        assert torch.equal(state[name], tensor), name
    lora = {k: v for k, v in state.items() if ".lora_" in k}
    assert lora and set(state) == set(base) | set(lora)
    assert any(v.abs().max() > 0 for k, v in lora.items() if ".lora_B." in k)  # B left zero: it trained
    # checkpoints hold only the adapter's tensors
    checkpoints = sorted((tmp_path / "run" / "checkpoints").glob("step-*"))
    assert [c.name for c in checkpoints] == ["step-00000002", "step-00000004"]
    saved = load_file(str(checkpoints[-1] / "model.safetensors"))
    assert set(saved) == set(lora)
    # the run's model is an adapter folder that fits the base and reproduces the trained model
    meta, tensors = read_adapter(tmp_path / "run" / "adapter")
    assert meta["base_model"] == str(base_dir) and meta["rank"] == 4
    train_result = result.results["steps"][1]["results"]
    assert (
        sum(t.numel() for t in tensors.values())
        == train_result["trainable_parameters"]
        == sum(v.numel() for v in lora.values())
    )
    model = load_text_model(base_dir)
    load_adapter(model, tmp_path / "run" / "adapter")
    x = torch.randint(0, 300, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = trained.adapter.head(trained.backbone.forward_hidden(trained.adapter.embed({"input_ids": x})))
        assert (lm_forward(model, x).logits - expected).abs().max().item() <= 1e-5
        set_adapter(model, None)
        assert torch.equal(lm_forward(model, x).logits, lm_forward(load_text_model(base_dir), x).logits)


def test_eval_generation_scores_before_and_after(base_dir, pairs_file, tmp_path):
    import json

    run_manifest_with(manager(), manifest(base_dir, pairs_file, max_steps=2), tmp_path / "run")
    CAPTURED.clear()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    text = json.dumps(metrics)
    for name in ("before", "after"):
        predictions = [
            json.loads(line) for line in (tmp_path / "run" / f"{name}.predictions.jsonl").read_text().splitlines()
        ]
        assert len(predictions) == 8 and {p["template"] for p in predictions} == {"lampung_to_id", "id_to_lampung"}
        assert {p["reference"] for p in predictions if p["template"] == "lampung_to_id"} <= {
            "saya mau makan",
            "kamu mau minum",
            "kami pergi ke pasar",
            "apa kabar",
        }
    assert "chrf_pp" in text and "lampung_to_id" in text


def test_resume_continues_from_adapter_only_checkpoints(base_dir, pairs_file, tmp_path):
    """Stopping after step 2 and resuming gives the same adapter as running 4 steps at once."""
    import shutil

    steps = {"checkpoint_every": 2, "keep_checkpoints": 2}
    run_manifest_with(manager(), manifest(base_dir, pairs_file, max_steps=4, **steps), tmp_path / "full")
    CAPTURED.clear()
    # the same run, stopped after step 2: only its first checkpoint exists
    shutil.copytree(
        tmp_path / "full" / "checkpoints" / "step-00000002", tmp_path / "resumed" / "checkpoints" / "step-00000002"
    )
    from sigerlm.manifest import load_manifest
    from sigerlm.run import Run

    resolved, pm = load_manifest(manifest(base_dir, pairs_file, max_steps=4, **steps), pm=manager())
    from sigerlm.training.train import train

    run = Run(resolved, tmp_path / "resumed", pm, resume=True)
    run.state["tokenizer"] = load_text_model(base_dir).adapter.tokenizer
    train(run, resolved.component("steps", 1).options)
    full = read_adapter(tmp_path / "full" / "adapter")[1]
    resumed = read_adapter(tmp_path / "resumed" / "adapter")[1]
    assert full.keys() == resumed.keys()
    for name in full:
        assert torch.equal(full[name], resumed[name]), name


def test_adapter_checkpoint_of_another_shape_is_refused(base_dir, pairs_file, tmp_path):
    run_manifest_with(manager(), manifest(base_dir, pairs_file, max_steps=2, checkpoint_every=2), tmp_path / "a")
    CAPTURED.clear()
    other = manifest(base_dir, pairs_file, max_steps=4, checkpoint_every=2)
    other["model"]["transforms"] = [{"use": "lora", "rank": 2, "targets": ["in_proj"]}]
    import shutil

    from sigerlm.manifest import load_manifest
    from sigerlm.model.checkpoint import CheckpointError
    from sigerlm.run import Run
    from sigerlm.training.train import train

    shutil.copytree(tmp_path / "a" / "checkpoints", tmp_path / "b" / "checkpoints")
    resolved, pm = load_manifest(other, pm=manager())
    run = Run(resolved, tmp_path / "b", pm, resume=True)
    run.state["tokenizer"] = load_text_model(base_dir).adapter.tokenizer
    with pytest.raises(CheckpointError, match="trainable tensors of another model"):
        train(run, resolved.component("steps", 1).options)


def test_init_from_and_transform_errors_are_named_before_work(base_dir, pairs_file, tmp_path):
    from sigerlm.errors import ManifestError
    from sigerlm.manifest import load_manifest

    bad = manifest(base_dir, pairs_file, max_steps=1)
    bad["model"]["init_from"] = str(tmp_path / "nowhere")
    bad["model"]["transforms"][0]["rank"] = 0
    with pytest.raises(ManifestError) as caught:
        load_manifest(bad, pm=manager())
    text = str(caught.value)
    assert "model.init_from" in text and "config.json is missing" in text
    assert "model.transforms[0].rank" in text
    both = manifest(base_dir, pairs_file, max_steps=1)
    both["model"]["profile"] = "tiny"
    with pytest.raises(ManifestError, match="either model.profile or model.init_from"):
        load_manifest(both, pm=manager())


def test_adapter_mismatch_message_names_both_bases(base_dir, other_base_dir, pairs_file, tmp_path):
    run_manifest_with(manager(), manifest(base_dir, pairs_file, max_steps=1), tmp_path / "run")
    CAPTURED.clear()
    with pytest.raises(LoraError, match=f"trained on base [0-9a-f]{{12}} \\({base_dir}\\)"):
        load_adapter(load_text_model(other_base_dir), tmp_path / "run" / "adapter")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lora-chat", "lora-lampung"])
def test_registry_lora_manifests_run(name, base_dir, tmp_path):
    """The shipped manifests run (shrunk by their test-overrides) on a base model folder."""
    path = REPO / "registry" / "manifests" / f"{name}.yaml"
    overrides = [*manifest_test_overrides(path), f"model.init_from={base_dir}"]
    pm = make_plugin_manager(load=["text", "lora"], required=["text", "lora"])
    result = run_manifest_with(pm, path, tmp_path / "run", overrides)
    assert result.status == "finished"
    assert (tmp_path / "run" / "adapter" / "adapter.safetensors").is_file()
