"""The block in models and manifests: profiles, aux losses and metrics in a run, dense -> MoE warm
start (the same function at step 0), the d_model refusal, and collapse with and without the aux loss."""

import json

import pytest
import torch

from sigerlm.assemble import build_model, load_model, model_for_run
from sigerlm.errors import ManifestError
from sigerlm.manifest import load_manifest
from sigerlm.model.config import SigerConfig
from sigerlm.run import Run
from sigerlm_moe import hooks
from sigerlm_moe.block import MoEBranch
from sigerlm_moe.hooks import MoEOptions
from sigerlm_testkit import add_plugin

ADAPTER = {"use": "random-embedding", "vocab_size": 64}
DATA = {"use": "random-tokens", "vocab_size": 64, "seq_len": 16, "batch_size": 4, "num_batches": 4}
SHRINK = {"d_model": 16, "n_layers": 4, "d_state": 4, "max_seq_len": 16}


@pytest.fixture
def pm(plugin_manager):
    add_plugin(plugin_manager, hooks, "moe")
    return plugin_manager


def manifest(max_steps=2, **model):
    train = {"use": "train", "max_steps": max_steps, "lr": 0.01, "progress": False, "plot": False}
    return {
        "siger": 1,
        "name": "moe",
        "model": {"adapter": ADAPTER, **model},
        "data": {"train": DATA, "valid": dict(DATA, num_batches=1)},
        "steps": [dict(train, eval_every=max_steps, eval_batches=1)],
    }


def test_the_small_moe_profile_is_moe_every_two_layers_with_8_experts_top2(pm):
    resolved, _ = load_manifest(manifest(profile="small_moe"), pm=pm)
    assert resolved.config.d_model == 384 and resolved.config.n_layers == 10
    torch.manual_seed(0)
    model = build_model(pm, resolved.config, ADAPTER)
    moe = [i for i, layer in enumerate(model.backbone.layers) if layer.moe is not None]
    assert moe == [1, 3, 5, 7, 9]
    branch = model.backbone.layers[1].moe
    assert len(branch.experts) == 8 and branch.top_k == 2
    dense, _ = load_manifest(manifest(profile="moe_dense_base"), pm=pm)
    assert dense.config.block == "core:ssm" and dense.config.d_model == 384 and dense.config.n_layers == 10


def test_options_are_validated_in_a_manifest(pm):
    with pytest.raises(ManifestError, match=r"top_k \(4\) must not exceed n_experts \(2\)"):
        load_manifest(manifest(profile="tiny", block={"use": "moe", "n_experts": 2, "top_k": 4}), pm=pm)
    with pytest.raises(ManifestError, match="n_expert"):
        load_manifest(manifest(profile="tiny", blocks=[{"use": "moe", "every": 2, "n_expert": 4}]), pm=pm)


def test_a_run_logs_moe_aux_and_moe_dead_and_the_folder_reloads(pm, run_manifest, tmp_path):
    spec = manifest(profile="tiny", config=SHRINK, blocks=[{"use": "moe", "every": 2, "moe_every": 1, "n_experts": 4}])
    result = run_manifest(spec, out_dir=tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all("moe_aux" in r and 0.0 <= r["moe_dead"] <= 1.0 for r in rows)
    assert "valid_moe_aux" in rows[-1] and "valid_moe_dead" in rows[-1]
    summary = result.results["steps"][0]["results"]
    assert "moe_aux" in summary and "moe_dead" in summary
    model = load_model(tmp_path / "run" / "model", pm)
    assert [getattr(layer, "moe", None) is not None for layer in model.backbone.layers] == [False, True, False, True]


def logits(model, ids):
    with torch.no_grad():
        return model.adapter.head(model.forward_hidden(model.adapter.embed({"input_ids": ids})))


def test_dense_to_moe_warm_start_computes_the_dense_function_at_step_0(pm, run_manifest, tmp_path):
    run_manifest(manifest(profile="moe_dense_base", config=SHRINK), out_dir=tmp_path / "dense")
    folder = tmp_path / "dense" / "model"
    spec = manifest(profile="small_moe", config=SHRINK, init_from={"path": str(folder), "strict": False})
    resolved, _ = load_manifest(spec, [f"out_dir={tmp_path / 'moe'}"], pm=pm)
    run = Run(resolved, tmp_path / "moe", pm)
    moe = model_for_run(run).eval()
    report = run.state["warm_start"]
    assert report["skipped"] == []  # every dense tensor is used
    assert report["new"] and all(".moe." in n for n in report["new"])  # only router, experts, branch norms
    dense = load_model(folder, pm)
    ids = torch.randint(0, 64, (2, 12))
    torch.testing.assert_close(logits(moe, ids), logits(dense, ids), rtol=0, atol=1e-6)
    # and it trains from there: the branch's output projections leave zero
    result = run_manifest(spec, out_dir=tmp_path / "moe-run")
    trained = load_model(tmp_path / "moe-run" / "model", pm)
    assert trained.backbone.layers[1].moe.experts[0].down.weight.abs().sum() > 0
    assert result.status == "finished"


def test_a_medium_folder_into_small_moe_is_refused_with_both_shapes(pm, tmp_path):
    from sigerlm.model.folder import CONFIG_FILE, FORMAT_VERSION

    folder = tmp_path / "medium"
    folder.mkdir()
    medium = SigerConfig.from_profile("medium").to_dict()
    meta = {"format_version": FORMAT_VERSION, "backbone": medium, "adapter": ADAPTER}
    (folder / CONFIG_FILE).write_text(json.dumps(meta))
    spec = manifest(profile="small_moe", init_from={"path": str(folder), "strict": False})
    with pytest.raises(
        ManifestError, match=r"d_model 512 x n_layers 12, the manifest asks for d_model 384 x n_layers 10"
    ):
        load_manifest(spec, pm=pm)


def toy_dead_share(aux_loss_weight, seed=0, steps=200):
    """Train one branch (8 experts, top-1) on a regression whose inputs come from 8 clusters, a
    task the experts could share; return the share of experts that receive no token of a fresh
    batch. (Inputs around a single centre made the outcome depend on the seed: the router
    could hardly tell the tokens apart, and even with the aux loss some seeds ended with dead
    experts.)"""
    torch.manual_seed(seed)
    config = SigerConfig.from_profile("tiny")
    branch = MoEBranch(config, 0, MoEOptions(n_experts=8, top_k=1, aux_loss_weight=aux_loss_weight, jitter=0.0))
    target, centres = torch.randn(16, 16) / 4, torch.randn(8, 16) * 2

    def batch(rows):
        return (centres[torch.randint(8, (rows,))] + 0.3 * torch.randn(rows, 16)).reshape(-1, 32, 16)

    optimizer = torch.optim.Adam(branch.parameters(), lr=1e-2)
    for _ in range(steps):
        x = batch(128)
        out = branch(x)
        weight, aux = branch.pop_aux()["losses"]["moe_aux"]
        loss = (out - x - 3 * torch.tanh(x @ target)).pow(2).mean() + weight * aux
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        branch.eval()(batch(512))
    return branch.pop_aux()["metrics"]["moe_dead"]


def test_on_a_toy_task_the_aux_loss_keeps_every_expert_alive_and_without_it_they_collapse():
    for seed in (0, 1, 2):
        assert toy_dead_share(1.0, seed) == 0.0
        assert toy_dead_share(0.0, seed) >= 0.25  # a quarter or more of the experts never chosen: collapse
