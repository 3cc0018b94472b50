"""The plugin contract as the data path: blocks per layer, auxiliary losses and metrics, a second
runtime, warm start across shapes, the time budget, and runs that stop being finite."""

import json

import pytest
import torch
from pydantic import BaseModel, ConfigDict

from sigerlm import hookimpl
from sigerlm.assemble import build_model, load_model, model_for_run
from sigerlm.errors import ManifestError
from sigerlm.manifest import load_manifest
from sigerlm.model.block import SSMBlock
from sigerlm.model.config import SigerConfig
from sigerlm.run import Run
from sigerlm.runtime import TorchRuntime
from sigerlm_testkit import add_plugin

DATA = {"use": "random-tokens", "vocab_size": 64, "seq_len": 16, "batch_size": 4, "num_batches": 4}


class AuxOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weight: float = 0.5
    nan_after: int | None = None  # forwards after which the block's output turns NaN


class AuxBlock(SSMBlock):
    """The SSM block plus an auxiliary loss (the mean square of its output) and a metric."""

    def __init__(self, config, layer_idx, options):
        super().__init__(config, layer_idx)
        self.options, self.calls, self._aux = options, 0, None

    def forward(self, hidden_states, state=None, return_state=False):
        out = super().forward(hidden_states, state, return_state)
        hidden = out[0] if return_state else out
        self.calls += 1
        if self.options.nan_after is not None and self.calls > self.options.nan_after:
            hidden = hidden * float("nan")
        self._aux = {"losses": {"square": (self.options.weight, hidden.pow(2).mean())}, "metrics": {"calls": 1.0}}
        return (hidden, out[1]) if return_state else hidden

    def pop_aux(self):
        aux, self._aux = self._aux, None
        return aux


class CountingRuntime(TorchRuntime):
    """A second runtime: the torch one, counting its steps."""

    name = "counting"
    steps = 0

    def step(self, inputs, state):
        CountingRuntime.steps += 1
        return super().step(inputs, state)


class ContractPlugin:
    @hookimpl
    def register_blocks(self, register):
        register("aux", AuxBlock, options=AuxOptions)

    @hookimpl
    def register_runtimes(self, register):
        register("counting", lambda model, options: CountingRuntime(model))


@pytest.fixture
def pm(plugin_manager):
    add_plugin(plugin_manager, ContractPlugin(), "contract")
    return plugin_manager


def manifest(**model):
    steps = [{"use": "train", "max_steps": 3, "lr": 0.01, "progress": False, "plot": False, "eval_every": 3}]
    return {
        "siger": 1,
        "name": "contract",
        "model": {"profile": "tiny", "adapter": {"use": "random-embedding", "vocab_size": 64}, **model},
        "data": {"train": DATA, "valid": dict(DATA, num_batches=1)},
        "steps": steps,
    }


def test_a_manifest_mixing_two_blocks_trains_saves_loads_and_decodes(pm, run_manifest, tmp_path):
    result = run_manifest(manifest(blocks=[{"use": "aux", "every": 2}]), out_dir=tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert [b["use"] for b in meta["blocks"]] == ["core:ssm", "contract:aux"]
    model = load_model(tmp_path / "run" / "model", pm)
    assert [type(layer).__name__ for layer in model.backbone.layers] == ["SSMBlock", "AuxBlock"]
    resolved = yaml_safe(tmp_path / "run" / "manifest.resolved.yaml")
    assert resolved["model"]["blocks"] == [{"use": "contract:aux", "weight": 0.5, "nan_after": None, "every": 2}]
    # decoding with the state equals the full forward at every position
    ids = torch.randint(0, 64, (2, 9))
    runtime = pm.get_component("runtimes", "torch").build(model)
    with torch.no_grad():
        full = model.adapter.head(model.forward_hidden(model.adapter.embed({"input_ids": ids})))
        logits, state = runtime.prefill({"input_ids": ids[:, :4]})
        steps = [logits]
        for t in range(4, 9):
            logits, state = runtime.step({"input_ids": ids[:, t]}, state)
            steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 3:], rtol=1e-5, atol=1e-5)
    assert result.results["steps"][0]["results"]["square"] > 0  # the aux loss reaches the summary


def yaml_safe(path):
    import yaml

    return yaml.safe_load(path.read_text())


def test_an_aux_loss_changes_the_gradient_and_its_metrics_reach_metrics_jsonl(pm, run_manifest, tmp_path):
    config = SigerConfig.from_profile("tiny")
    batch = {"input_ids": torch.randint(0, 64, (2, 8))}
    grads = {}
    for weight in (0.0, 5.0):
        torch.manual_seed(0)
        blocks = [{"use": "aux", "weight": weight}] * 2
        model = build_model(pm, config, {"use": "random-embedding", "vocab_size": 64}, blocks)
        model(batch).backward()
        grads[weight] = model.backbone.layers[0].mixer.out_proj.weight.grad.clone()
        assert model.last_metrics["calls"] == 1.0 and model.last_metrics["square"] > 0
    assert not torch.allclose(grads[0.0], grads[5.0])
    run_manifest(manifest(block={"use": "aux"}), out_dir=tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("square" in r and r["calls"] == 1.0 for r in rows)
    assert "valid_square" in rows[-1]  # evaluation reports them too


def test_a_second_runtime_is_chosen_by_name(pm):
    model = build_model(pm, SigerConfig.from_profile("tiny"), {"use": "random-embedding", "vocab_size": 64}).eval()
    runtime = pm.get_component("runtimes", "counting").build(model)
    before = CountingRuntime.steps
    _, state = runtime.prefill({"input_ids": torch.tensor([[1, 2, 3]])})
    runtime.step({"input_ids": torch.tensor([4])}, state)
    assert runtime.name == "counting" and CountingRuntime.steps == before + 1


def test_warm_start_grows_layers_and_a_head_and_reports_each_tensor(pm, run_manifest, tmp_path, caplog):
    small = manifest()
    small["steps"][0]["max_steps"] = 1
    run_manifest(small, out_dir=tmp_path / "small")
    folder = tmp_path / "small" / "model"
    grown = manifest(config={"n_layers": 3}, init_from={"path": str(folder), "strict": False})
    grown["model"]["adapter"]["vocab_size"] = 96
    resolved, _ = load_manifest(grown, [f"out_dir={tmp_path / 'grown'}"], pm=pm)
    run = Run(resolved, tmp_path / "grown", pm)
    with caplog.at_level("INFO", logger="sigerlm"):
        model = model_for_run(run)
    report = run.state["warm_start"]
    from sigerlm.model.checkpoint import read_tensors

    old = read_tensors(folder / "model.safetensors")
    assert "backbone.layers.1.mixer.A_log" in report["copied"] and "backbone.layers.2.mixer.A_log" in report["new"]
    assert "adapter.embedding.weight" in report["skipped"] and "adapter.embedding.weight" in report["new"]
    assert set(report["copied"]) == {n for n in old if n in model.state_dict() and n not in report["skipped"]}
    torch.testing.assert_close(
        model.state_dict()["backbone.layers.1.mixer.A_log"], old["backbone.layers.1.mixer.A_log"]
    )
    assert "warm start from" in caplog.text and "skipped 2 tensors" in caplog.text


def test_warm_start_of_another_d_model_fails_before_training_with_both_shapes(pm, run_manifest, tmp_path):
    small = manifest()
    small["steps"][0]["max_steps"] = 1
    run_manifest(small, out_dir=tmp_path / "small")
    wide = manifest(config={"d_model": 32}, init_from={"path": str(tmp_path / "small" / "model"), "strict": False})
    with pytest.raises(ManifestError, match=r"d_model 16 x n_layers 2, the manifest asks for d_model 32 x n_layers 2"):
        load_manifest(wide, pm=pm)
    strict = manifest(init_from=str(tmp_path / "small" / "model"))
    with pytest.raises(ManifestError, match="give either model.profile or model.init_from"):
        load_manifest(strict, pm=pm)


def test_blocks_are_validated_against_n_layers(pm):
    with pytest.raises(ManifestError, match=r"blocks\[0\].every must be an integer in \[1, 2\], got 5"):
        load_manifest(manifest(blocks=[{"use": "aux", "every": 5}]), pm=pm)
    with pytest.raises(ManifestError, match="3 blocks for 2 layers"):
        load_manifest(manifest(blocks=["aux", "ssm", "aux"]), pm=pm)
    with pytest.raises(ManifestError, match=r"model.blocks\[0\].weight"):
        load_manifest(manifest(blocks=[{"use": "aux", "layers": [1], "weight": "heavy"}]), pm=pm)


def test_a_time_budget_ends_training_and_the_run_says_so(pm, run_manifest, tmp_path):
    budget = manifest()
    budget["steps"][0].update(max_steps=100_000, max_minutes=0.002, eval_every=None)
    summary = run_manifest(budget, out_dir=tmp_path / "run").results["steps"][0]["results"]
    assert summary["ended_by"] == "max_minutes" and 1 <= summary["steps"] < 100_000
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == summary["steps"]


def test_a_loss_that_stops_being_finite_fails_the_run_and_keeps_the_last_good_checkpoint(pm, run_manifest, tmp_path):
    broken = manifest(blocks=[{"use": "aux", "layers": [0], "nan_after": 2}])
    broken["steps"][0].update(max_steps=5, checkpoint_every=1, eval_every=None)
    with pytest.raises(Exception, match="step 3: the loss .* is no longer finite"):
        run_manifest(broken, out_dir=tmp_path / "run")
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "failed"
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-00000001", "step-00000002"]
    assert not (tmp_path / "run" / "model").exists()
    infinite = manifest()
    infinite["steps"][0]["lr"] = float("inf")
    with pytest.raises(ManifestError, match=r"steps\[0\].lr"):
        load_manifest(infinite, pm=pm)
