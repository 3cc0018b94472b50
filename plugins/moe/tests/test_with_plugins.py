"""An MoE model through the other plugins: sigerlm-text's Generator, ``siger generate`` and
``siger chat`` on an MoE model folder, sigerlm-serving's HTTP API (skipped where serving is not
installed: moe does not depend on it), LoRA on the expert projections merged into a plain folder
(the merged model computes the LoRA model's logits), and DDP on two CPU processes.

The model is trained for a few steps first, so the experts' output projections are no longer
zero and the branch really changes the outputs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sigerlm.plugins import make_plugin_manager
from sigerlm_moe import hooks
from sigerlm_testkit import add_plugin, install_testkit
from sigerlm_text import hooks as text_hooks
from sigerlm_text.generation import GenerationConfig, Generator
from sigerlm_text.model import lm_forward, load_text_model

TEXTS = ["Nyak haga mengan di pekon.", "Saya mau makan di kampung.", "I want to eat in the village."] * 20
BLOCK = {"use": "moe", "n_experts": 4, "top_k": 2, "moe_every": 1, "capacity_factor": 1.5}
PROMPT = "Saya mau"


def components():
    pm = make_plugin_manager(load="none")
    add_plugin(pm, text_hooks, "text")
    add_plugin(pm, hooks, "moe")
    return pm


@pytest.fixture(scope="module")
def moe_folder(tmp_path_factory):
    """A tiny text model with the branch on both layers (4 experts, top-2), trained 30 steps."""
    from sigerlm.manifest import load_manifest
    from sigerlm.run import execute
    from sigerlm_text.tokenizers.bpe import BPETokenizer

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("moe-text")
    (folder / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    BPETokenizer.train(TEXTS, vocab_size=300, min_frequency=1).save(folder / "tok")
    data = {"use": "text_completion", "files": [str(folder / "train.jsonl")], "tokenizer": str(folder / "tok")}
    manifest = {
        "siger": 1,
        "name": "moe-text",
        "model": {
            "profile": "tiny",
            "block": BLOCK,
            "adapter": {"use": "text", "vocab_size": 300, "tokenizer": str(folder / "tok")},
        },
        "data": {"train": dict(data, seq_len=16, batch_size=4)},
        "steps": [{"use": "train", "max_steps": 30, "lr": 0.02, "progress": False, "plot": False}],
    }
    resolved, pm = load_manifest(manifest, [f"out_dir={folder / 'run'}"], pm=components())
    execute(resolved, pm)
    return folder / "run" / "model"


def load(folder):
    model = load_text_model(folder, components=components())
    layers = model.backbone.layers
    assert all(layer.moe is not None for layer in layers)
    assert all(e.down.weight.abs().sum() > 0 for layer in layers for e in layer.moe.experts)  # trained
    return model


def greedy_by_recomputation(model, ids, n):
    """The uncached reference: the whole sequence again for every new token."""
    out = list(ids)
    with torch.no_grad():
        for _ in range(n):
            out.append(int(lm_forward(model, torch.tensor([out])).logits[0, -1].argmax()))
    return out[len(ids) :]


def generator(model):
    from sigerlm.runtime import TorchRuntime

    gen = Generator(TorchRuntime(model), model.adapter.tokenizer)
    return gen


def test_the_generator_on_an_moe_folder_equals_recomputation(moe_folder):
    model = load(moe_folder)
    gen = generator(model)
    gen.rules.end_ids = set()  # all 24 tokens
    prompt = model.adapter.tokenizer.encode(PROMPT)
    rows = gen.generate_ids([prompt], GenerationConfig(max_new_tokens=24))
    assert rows[0].ids == greedy_by_recomputation(model, prompt, 24)
    # the decode state is the SSM's: the same sizes after 24 tokens as before the first
    runtime = gen.runtime
    logits, state = runtime.prefill({"input_ids": torch.tensor([prompt])})
    sizes = [tuple(s.shape) for layer in state for s in layer]
    for token in rows[0].ids:
        logits, state = runtime.step({"input_ids": torch.tensor([token])}, state)
    assert [tuple(s.shape) for layer in state for s in layer] == sizes
    full = lm_forward(model, torch.tensor([prompt + rows[0].ids])).logits[0, -1]
    torch.testing.assert_close(logits[0], full, rtol=1e-5, atol=1e-5)


def siger(*args, stdin=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGER_")}
    env["SIGER_LOAD_PLUGINS"] = "text,moe"
    command = [str(Path(sys.executable).with_name("siger")), *map(str, args)]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_siger_generate_and_siger_chat_on_an_moe_folder(moe_folder):
    expected = generator(load(moe_folder)).generate(PROMPT, max_new_tokens=8).text
    out = siger("generate", moe_folder, PROMPT, "--max-new-tokens", "8")
    assert out.returncode == 0, out.stderr
    assert out.stdout.rstrip("\n") == expected and expected.strip()
    chat = siger("chat", moe_folder, "--max-new-tokens", "5", stdin="halo\n/reset\nlagi\n/exit\n")
    assert chat.returncode == 0, chat.stderr
    assert "(history cleared)" in chat.stdout
    replies = [line for line in chat.stdout.splitlines() if line.strip() and not line.startswith(("(", "/"))]
    assert len(replies) >= 2


def test_serving_answers_a_request_with_an_moe_model(moe_folder, tmp_path):
    pytest.importorskip("sigerlm_serving", reason="sigerlm-serving is optional for moe")
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from sigerlm_serving.app import create_app
    from sigerlm_serving.settings import ServeSettings

    expected = generator(load(moe_folder)).generate(PROMPT, max_new_tokens=8)
    settings = ServeSettings(model_dir=str(moe_folder), db=str(tmp_path / "serving.db"))
    with TestClient(create_app(settings, components())) as client:
        answer = client.post("/v1/generate", json={"prompt": PROMPT, "max_new_tokens": 8})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["text"] == expected.text and body["finish_reason"] == expected.finish_reason
        status = client.get("/v1/status").json()
        assert "moe" in status["plugins"]  # the server loaded the block from the plugin it was given


def test_lora_on_the_expert_projections_merges_into_a_model_with_the_same_logits(moe_folder, tmp_path):
    from sigerlm_lora import LoraConfig, LoraLinear, add_adapter, merge_and_export, save_adapter

    model = load(moe_folder)
    ids = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base = lm_forward(model, ids).logits
    add_adapter(model, "tune", LoraConfig(rank=2, alpha=4, targets=["gate", "up", "down", "in_proj"]))
    wrapped = {n for n, m in model.named_modules() if isinstance(m, LoraLinear)}
    assert "backbone.layers.1.moe.experts.3.down" in wrapped and "backbone.layers.0.mixer.in_proj" in wrapped
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():  # B as training would leave it: the adapter changes outputs
            if isinstance(module, LoraLinear):
                module.lora_B["tune"].copy_(torch.randn(module.lora_B["tune"].shape, generator=g) * 0.5)
        tuned = lm_forward(model, ids).logits
    assert (tuned - base).abs().max() > 1e-2  # the adapter's effect: 100x the merge tolerance below
    adapter = save_adapter(model, tmp_path / "adapter", "tune")
    merged_folder = merge_and_export(moe_folder, adapter, tmp_path / "merged")
    merged = load(merged_folder)  # a plain MoE model folder, no LoRA layers
    assert not any(isinstance(m, LoraLinear) for m in merged.modules())
    with torch.no_grad():
        torch.testing.assert_close(lm_forward(merged, ids).logits, tuned, rtol=1e-4, atol=1e-4)
    before = load(moe_folder).state_dict()
    changed = [k for k, v in merged.state_dict().items() if not torch.equal(v, before[k])]
    assert (
        "backbone.layers.1.moe.experts.0.up.weight" in changed and "backbone.layers.0.mixer.in_proj.weight" in changed
    )


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_matches_one_process_with_experts_idle_on_a_rank(tmp_path):
    """Each rank routes its own tokens, so an expert can get none on one rank: it must still
    take part in the gradient reduction. Jitter and the aux loss are off so that two ranks of
    2 rows compute exactly what one process does on 4 (the balance loss is per rank)."""
    block = {"use": "moe", "n_experts": 4, "top_k": 2, "moe_every": 1, "jitter": 0.0, "aux_loss_weight": 0.0}
    one = {
        "siger": 1,
        "name": "moe-ddp",
        "seed": 1,
        "plugins": ["testkit", "moe"],
        "model": {
            "profile": "tiny",
            "config": {"d_model": 16, "n_layers": 2, "d_state": 4, "max_seq_len": 8},
            "block": block,
            "adapter": {"use": "random-embedding", "vocab_size": 64},
        },
        "data": {"train": {"use": "random-tokens", "vocab_size": 64, "seq_len": 4, "batch_size": 2, "num_batches": 6}},
        "steps": [{"use": "train", "max_steps": 6, "lr": 0.02, "progress": False, "plot": False, "save_model": None}],
    }
    two = json.loads(json.dumps(one))
    two["data"]["train"]["batch_size"] = 1  # per rank: 2 ranks x 1 = the same global batch of 2 rows
    (tmp_path / "one.json").write_text(json.dumps(one))
    (tmp_path / "two.json").write_text(json.dumps(two))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGER_")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(install_testkit(tmp_path / "site")))
    cli = [str(Path(sys.executable).with_name("siger"))]
    single = subprocess.run(
        [*cli, "run", tmp_path / "one.json", "-o", tmp_path / "one"], env=env, capture_output=True, text=True
    )
    assert single.returncode == 0, single.stderr[-3000:]
    torchrun = [str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node=2"]
    out = subprocess.run(
        [*torchrun, "-m", "sigerlm.cli", "run", str(tmp_path / "two.json"), "-o", str(tmp_path / "two")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]

    def rows(name):
        return [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    a, b = rows("one"), rows("two")
    assert len(a) == len(b) == 6
    assert max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b, strict=True)) <= 1e-5
    assert max(abs(x["grad_norm"] - y["grad_norm"]) for x, y in zip(a, b, strict=True)) <= 1e-5
    assert any(r["moe_dead"] > 0 for r in b)  # some rank had an expert with no token in some step
