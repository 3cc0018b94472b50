"""The text adapter and SigerLM: loss, decoding, model folders tied to their tokenizer."""

import pytest
import torch
import torch.nn.functional as F

from sigerlm.model.checkpoint import CheckpointError
from sigerlm.model.config import SigerConfig
from sigerlm_testkit import add_plugin
from sigerlm_text import hooks
from sigerlm_text.model import lm_forward, load_text_model, text_model
from sigerlm_text.tokenizers.base import TokenizerError
from sigerlm_text.tokenizers.bpe import BPETokenizer

TEXTS = ["Nyak haga mengan.", "Saya mau makan.", "I want to eat.", "na'en nikeu?"] * 5


@pytest.fixture(scope="module")
def tokenizer():
    return BPETokenizer.train(TEXTS, vocab_size=300, min_frequency=1)


def tiny_model(tokenizer, **kw):
    torch.manual_seed(0)
    return text_model(SigerConfig.from_profile("tiny"), vocab_size=300, tokenizer=tokenizer, **kw).eval()


def test_forward_gives_logits_and_the_masked_loss(tokenizer):
    model = tiny_model(tokenizer)
    ids = torch.tensor([tokenizer.encode(t)[:5] for t in TEXTS[:3]])
    labels = torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], -100)], dim=1)
    labels[0, 0] = -100
    out = lm_forward(model, ids, labels=labels, return_logits=True)
    assert out.logits.shape == (3, 5, 300)
    expected = F.cross_entropy(out.logits.reshape(-1, 300), labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)
    assert lm_forward(model, ids, labels=labels).logits is None  # training never builds the full logits
    assert lm_forward(model, ids).loss is None


def test_step_after_prefill_matches_the_full_forward(tokenizer):
    model = tiny_model(tokenizer)
    ids = torch.tensor([tokenizer.encode("Nyak haga mengan, na'en nikeu?")])
    with torch.no_grad():
        full = lm_forward(model, ids).logits
        out = lm_forward(model, ids[:, :4], return_state=True)
        state, steps = out.state, [out.logits]
        for t in range(4, ids.shape[1]):
            logits, state = model.step({"input_ids": ids[:, t]}, state)
            steps.append(logits[:, None])
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tie", [True, False])
def test_save_and_load_a_model_folder(tokenizer, tmp_path, tie):
    model = tiny_model(tokenizer, tie_embeddings=tie)
    model.save_pretrained(tmp_path / "m", plugins={"text": "0.1.0"})
    assert (tmp_path / "m" / "tokenizer.json").is_file()
    loaded = load_text_model(tmp_path / "m")
    assert loaded.adapter.tokenizer.hash == tokenizer.hash
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    ids = torch.tensor([tokenizer.encode("Saya mau makan.")])
    with torch.no_grad():
        assert torch.equal(lm_forward(model, ids).logits, lm_forward(loaded, ids).logits)
    assert loaded.adapter.tie_embeddings is tie


def test_loading_with_another_tokenizer_is_refused(tokenizer, tmp_path):
    tiny_model(tokenizer).save_pretrained(tmp_path / "m")
    other = BPETokenizer.train(["completely different text"] * 20, vocab_size=290, min_frequency=1)
    with pytest.raises(TokenizerError, match="was trained with tokenizer .* not with this bpe tokenizer"):
        load_text_model(tmp_path / "m", tokenizer=other)
    (tmp_path / "m" / "tokenizer.json").unlink()
    with pytest.raises(TokenizerError, match="holds no tokenizer"):
        load_text_model(tmp_path / "m")


def test_a_folder_of_another_adapter_is_not_a_text_model(tmp_path):
    from sigerlm.assemble import build_model
    from sigerlm_testkit import kit_plugin_manager

    pm = kit_plugin_manager()
    add_plugin(pm, hooks, "text")
    build_model(pm, SigerConfig.from_profile("tiny"), {"use": "random-embedding"}).save(tmp_path / "b")
    with pytest.raises(CheckpointError, match="is not a text model .*'testkit:random-embedding'"):
        load_text_model(tmp_path / "b", components=pm)


def test_a_folder_written_before_the_one_model_class_loads_unchanged():
    """``fixtures/old-format`` was written by the code before ``SigerModel`` (``SigerLM.save_pretrained``
    of the tiny profile with a 300-token BPE); it loads through the one lifecycle with the same
    logits and greedy tokens it had then."""
    import json
    from pathlib import Path

    from sigerlm_text.generation import GenerationConfig, Generator, make_runtime

    fixture = Path(__file__).parent / "fixtures" / "old-format"
    expected = json.loads((fixture / "expected.json").read_text())
    model = load_text_model(fixture / "model")
    tok = model.adapter.tokenizer
    assert tok.encode(expected["prompt"]) == expected["prompt_ids"]
    assert model.identity == "SIGER-FIXTURE"
    with torch.no_grad():
        logits = lm_forward(model, torch.tensor([expected["prompt_ids"]])).logits[0, -1]
    torch.testing.assert_close(logits, torch.tensor(expected["last_logits"]), rtol=0, atol=2e-6)
    result = Generator(make_runtime(model), tok).generate(expected["prompt"], GenerationConfig(max_new_tokens=8))
    assert result.token_ids == expected["greedy_ids"]


def test_tokenizer_larger_than_the_embedding_is_refused(tokenizer):
    with pytest.raises(TokenizerError, match="the tokenizer has .* tokens but the model only 100"):
        text_model(SigerConfig.from_profile("tiny"), vocab_size=100, tokenizer=tokenizer)


def test_the_text_adapter_runs_in_a_manifest(plugin_manager, run_manifest):
    add_plugin(plugin_manager, hooks, "text")
    manifest = {
        "siger": 1,
        "name": "text-adapter",
        "model": {"profile": "tiny", "adapter": {"use": "text", "vocab_size": 64}},
        "data": {"train": {"use": "random-tokens", "vocab_size": 64, "num_batches": 2}},
        "steps": [{"use": "record-calls", "split": "train", "batches": 2}],
    }
    result = run_manifest(manifest).results["steps"][0]["results"]
    assert abs(result["loss"] - torch.log(torch.tensor(64.0)).item()) < 0.5  # untrained: near uniform


def test_the_decode_head_uses_the_row_kernel_only_at_inference(tokenizer, monkeypatch):
    """A decode step's head (a few rows, no gradients, kernels loaded) goes through core's
    ``linear_rows``; with gradients, many rows or while exporting it stays a matmul. Same logits."""
    from sigerlm_kernels import kernels

    kernels.load()
    model = text_model(SigerConfig.from_profile("tiny", d_model=32, n_layers=2), 300, tokenizer).eval()
    calls = []
    real = kernels.loaded()

    class Spy:
        def linear_rows(self, x, w):
            calls.append(tuple(x.shape))
            return real.linear_rows(x, w)

    monkeypatch.setattr(kernels, "loaded", lambda: Spy())
    hidden = torch.randn(3, 32)
    with torch.no_grad():
        fast = model.adapter.head(hidden)
        model.adapter.head(torch.randn(17, 32))  # more rows than the kernel is for
        model.adapter.head(torch.randn(2, 5, 32))  # a prefill's (b, l, d)
    assert calls == [(3, 32)]
    torch.testing.assert_close(fast, hidden @ model.adapter.head_weight.t(), rtol=1e-5, atol=1e-5)
    model.adapter.head(hidden)  # gradients on: the matmul, so autograd sees it
    assert calls == [(3, 32)]
