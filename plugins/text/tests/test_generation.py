"""Generation: the cache equals recomputation, streaming equals the full text, stop rules."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sigerlm.model.config import SigerConfig
from sigerlm.runtime import TorchRuntime
from sigerlm_testkit import add_plugin
from sigerlm_text import hooks
from sigerlm_text.generation import GenerationConfig, GenerationError, Generator
from sigerlm_text.model import lm_forward, load_text_model, text_model
from sigerlm_text.tokenizers.bpe import BPETokenizer

TEXTS = ["Nyak haga mengan di pekon.", "Saya mau makan di kampung.", "I want to eat in the village. é ü 👋"] * 30


@pytest.fixture(scope="module")
def tok():
    return BPETokenizer.train(TEXTS, vocab_size=300, min_frequency=1)


@pytest.fixture(scope="module")
def random_model(tok):
    torch.manual_seed(0)
    return text_model(SigerConfig.from_profile("tiny"), vocab_size=300, tokenizer=tok).eval()


@pytest.fixture(scope="module")
def trained_model(tok, tmp_path_factory):
    from sigerlm.manifest import load_manifest
    from sigerlm.plugins import make_plugin_manager
    from sigerlm.run import execute

    folder = tmp_path_factory.mktemp("trained")
    (folder / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    tok.save(folder / "tok")
    data = {
        "use": "text_completion",
        "files": [str(folder / "train.jsonl")],
        "tokenizer": str(folder / "tok"),
        "seq_len": 16,
        "batch_size": 4,
    }
    manifest = {
        "siger": 1,
        "name": "gen",
        "model": {"profile": "tiny", "adapter": {"use": "text", "vocab_size": 300}},
        "data": {"train": data},
        "steps": [{"use": "train", "max_steps": 80, "lr": 0.02, "progress": False}],
    }
    pm = make_plugin_manager(load="none")
    add_plugin(pm, hooks, "text")
    resolved, pm = load_manifest(manifest, [f"out_dir={folder / 'run'}"], pm=pm)
    execute(resolved, pm)
    return load_text_model(folder / "run" / "model", tokenizer=tok)


def recompute_greedy(model, ids, n):
    """The uncached reference: the whole sequence again for every new token."""
    out = list(ids)
    with torch.no_grad():
        for _ in range(n):
            logits = lm_forward(model, torch.tensor([out])).logits[0, -1]
            out.append(int(logits.argmax()))
    return out[len(ids) :]


@pytest.mark.parametrize("which", ["random_model", "trained_model"])
def test_cached_greedy_equals_recomputation_for_64_tokens(which, request, tok):
    model = request.getfixturevalue(which)
    prompt = tok.encode("Saya mau makan")
    gen = Generator(TorchRuntime(model), tok)
    gen.rules.end_ids = set()  # run the full 64 tokens
    rows = gen.generate_ids([prompt], GenerationConfig(max_new_tokens=64))
    assert len(rows[0].ids) == 64
    assert rows[0].ids == recompute_greedy(model, prompt, 64)


def test_batched_prompts_of_different_lengths_equal_one_by_one(random_model, tok):
    gen = Generator(TorchRuntime(random_model), tok)
    prompts = ["Nyak", "Saya mau makan di kampung", "I want"]
    config = GenerationConfig(max_new_tokens=12)
    together = gen.generate(prompts, config)
    alone = [gen.generate(p, config) for p in prompts]
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]


def test_sampling_is_seeded_and_settings_are_checked(random_model, tok):
    gen = Generator(TorchRuntime(random_model), tok)
    a = gen.generate("Saya", temperature=1.0, top_k=20, top_p=0.9, repetition_penalty=1.2, seed=3, max_new_tokens=16)
    b = gen.generate("Saya", temperature=1.0, top_k=20, top_p=0.9, repetition_penalty=1.2, seed=3, max_new_tokens=16)
    assert a.token_ids == b.token_ids
    for bad, field in [
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
    ]:
        with pytest.raises(GenerationError, match=f"invalid generation settings: {field}"):
            gen.generate("Saya", **bad)


class Scripted:
    """A runtime that emits a fixed sequence of token ids (to test text handling exactly)."""

    def __init__(self, ids, vocab):
        self.ids, self.vocab = list(ids), vocab

    def _logits(self, position):
        logits = torch.zeros(1, self.vocab)
        logits[0, self.ids[min(position, len(self.ids) - 1)]] = 1.0
        return logits

    def prefill(self, input_ids, state=None):
        return self._logits(0), 0

    def step(self, input_ids, state):
        return self._logits(state + 1), state + 1

    stack_states = staticmethod(lambda states: states[0])
    select_rows = staticmethod(lambda state, rows: state)


def scripted(tok, *pieces):
    ids = []
    for piece in pieces:
        ids += [tok.token_id(piece)] if piece in tok.special_tokens else tok.encode(piece, allow_special=False)
    return Generator(Scripted(ids, tok.vocab_size), tok)


def test_stream_never_splits_a_utf8_character(tok):
    text = "é ü 👋 ok"
    ids = tok.encode(text)
    assert len(ids) > len(text.split()), "the emoji must span several byte tokens for this test"
    gen = Generator(Scripted(ids + [tok.token_id("<|eos|>")], tok.vocab_size), tok)
    deltas = list(gen.stream("x", max_new_tokens=50))
    assert "".join(deltas) == text == gen.generate("x", max_new_tokens=50).text
    assert all("\ufffd" not in d for d in deltas)


def test_stop_strings_cut_the_text_and_are_held_back_while_streaming(tok):
    gen = scripted(tok, "Saya mau", " STOP", " makan", "<|eos|>")
    result = gen.generate("x", stop=["STOP"], max_new_tokens=30)
    assert result.text == "Saya mau " and result.finish_reason == "stop"
    deltas = list(gen.stream("x", stop=["STOP"], max_new_tokens=30))
    assert "".join(deltas) == "Saya mau "  # " S", " ST"... were held back, never emitted and retracted
    assert gen.generate("x", max_new_tokens=3).finish_reason == "length"


def test_no_stop_inside_an_open_thought_and_thoughts_can_be_hidden(tok):
    gen = scripted(tok, "<thought>", "pikir", "<|end_turn|>", " STOP", "</thought>", "jawab", "<|end_turn|>", "lagi")
    result = gen.generate("x", stop=["STOP"], max_new_tokens=30)
    # the end token and the stop string inside the thought did not stop it; the ones after did
    assert result.text == "<thought>pikir<|end_turn|> STOP</thought>jawab" and result.finish_reason == "stop"
    hidden = gen.generate("x", stop=["STOP"], hide_thought=True, max_new_tokens=30)
    assert hidden.text == "jawab"
    assert "".join(gen.stream("x", stop=["STOP"], hide_thought=True, max_new_tokens=30)) == "jawab"


def test_stream_equals_generate_on_a_model(random_model, tok):
    gen = Generator(TorchRuntime(random_model), tok)
    for settings in ({}, {"temperature": 0.9, "seed": 5}, {"stop": ["a"]}):
        assert (
            "".join(gen.stream("Nyak haga", max_new_tokens=24, **settings))
            == gen.generate("Nyak haga", max_new_tokens=24, **settings).text
        )


def test_generate_command(random_model, tmp_path):
    random_model.save_pretrained(tmp_path / "m")
    siger = Path(sys.executable).with_name("siger")
    plain = subprocess.run(
        [siger, "generate", tmp_path / "m", "Saya", "--max-new-tokens", "8"], capture_output=True, text=True
    )
    streamed = subprocess.run(
        [siger, "generate", tmp_path / "m", "Saya", "--max-new-tokens", "8", "--stream"], capture_output=True, text=True
    )
    assert plain.returncode == streamed.returncode == 0, plain.stderr + streamed.stderr
    assert plain.stdout == streamed.stdout and len(plain.stdout) > 1
    bad = subprocess.run([siger, "generate", tmp_path / "m", "Saya", "--top-p", "0"], capture_output=True, text=True)
    assert bad.returncode == 1 and "top_p" in bad.stderr


def test_chunked_prefill_gives_the_same_state(random_model, tok):
    ids = torch.tensor([tok.encode(" ".join(TEXTS[:6]))])
    whole_logits, whole_state = TorchRuntime(random_model, prefill_chunk=10_000).prefill({"input_ids": ids})
    chunked_logits, chunked_state = TorchRuntime(random_model, prefill_chunk=7).prefill({"input_ids": ids})
    torch.testing.assert_close(chunked_logits, whole_logits, rtol=1e-5, atol=1e-5)
    for (c1, s1), (c2, s2) in zip(whole_state, chunked_state, strict=True):
        torch.testing.assert_close(c1, c2)
        torch.testing.assert_close(s1, s2, rtol=1e-5, atol=1e-5)


def test_left_and_right_padding_give_the_unpadded_results(random_model, tok):
    gen = Generator(TorchRuntime(random_model), tok)
    prompts = [tok.encode("Nyak"), tok.encode("Saya mau makan di kampung")]
    config = GenerationConfig(max_new_tokens=10)
    expected = [r.ids for r in gen.generate_ids(prompts, config)]
    width, pad = max(map(len, prompts)), tok.pad_id
    for side in ("left", "right"):
        ids = torch.full((2, width), pad)
        mask = torch.zeros(2, width, dtype=torch.long)
        for i, p in enumerate(prompts):
            where = slice(width - len(p), width) if side == "left" else slice(0, len(p))
            ids[i, where] = torch.tensor(p)
            mask[i, where] = 1
        assert [r.ids for r in gen.generate_padded(ids, mask, config)] == expected, side


RUNTIME_PLUGIN = '''
from pathlib import Path

from sigerlm import hookimpl


def marked(model, options):
    """The torch runtime, leaving a mark for each step it decodes."""
    import os

    from sigerlm.runtime import TorchRuntime

    class Marked(TorchRuntime):
        name = "marked"

        def step(self, inputs, state):
            with open(os.environ["MARK_FILE"], "a") as handle:
                handle.write("step\\n")
            return super().step(inputs, state)

    return Marked(model)


@hookimpl
def register_runtimes(register):
    register("marked", marked)
'''


def test_the_runtime_comes_from_the_registry_by_name(random_model, tmp_path):
    """``--runtime`` picks a runtime another plugin registers; bad input is a one-line error."""
    import os

    from sigerlm_testkit import write_distribution

    random_model.save(tmp_path / "m")
    site = write_distribution(tmp_path / "site", "fake-rt", {"fake_rt.hooks": RUNTIME_PLUGIN}, {"rt": "fake_rt.hooks"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGER_")}
    env.update(PYTHONPATH=str(site), MARK_FILE=str(tmp_path / "marks"))
    siger = str(Path(sys.executable).with_name("siger"))

    def run(*args, stdin=None):
        args = [a if isinstance(a, bytes) else str(a) for a in args]
        return subprocess.run([siger, *args], capture_output=True, env=env, input=stdin)

    torch_out = run("generate", tmp_path / "m", "Saya", "--max-new-tokens", "6")
    marked_out = run("generate", tmp_path / "m", "Saya", "--max-new-tokens", "6", "--runtime", "marked")
    assert torch_out.returncode == marked_out.returncode == 0, marked_out.stderr
    assert marked_out.stdout == torch_out.stdout
    assert (tmp_path / "marks").read_text().count("step") >= 1
    unknown = run("generate", tmp_path / "m", "Saya", "--runtime", "onnx-nope")
    assert unknown.returncode == 1 and b"unknown runtime 'onnx-nope'" in unknown.stderr
    not_utf8 = run("generate", tmp_path / "m", b"Saya \xff")
    assert not_utf8.returncode == 1 and b"argument 3 (Saya ...) is not valid UTF-8 text" in not_utf8.stderr
    threads = run("generate", tmp_path / "m", "Saya", "--threads", "-1")
    assert threads.returncode == 2 and b"--threads" in threads.stderr and b"Traceback" not in threads.stderr
    chat = run("chat", tmp_path / "m", "--max-new-tokens", "3", stdin=b"halo\n\xff\xfe\n")
    assert chat.returncode == 1 and b"standard input, line 2: not valid UTF-8" in chat.stderr


def test_a_manifest_names_the_runtime_of_eval_generation(tok, tmp_path, plugin_manager, run_manifest):
    """The ``eval-generation`` step decodes with the runtime its options name."""
    from sigerlm import hookimpl

    calls = []

    class Plugin:
        @hookimpl
        def register_runtimes(self, register):
            def counting(model, options):
                class Counting(TorchRuntime):
                    def step(self, inputs, state):
                        calls.append(1)
                        return super().step(inputs, state)

                return Counting(model)

            register("counting", counting)

    add_plugin(plugin_manager, hooks, "text")
    add_plugin(plugin_manager, Plugin(), "counting")
    torch.manual_seed(0)
    text_model(SigerConfig.from_profile("tiny"), 300, tok).save(tmp_path / "base")
    (tmp_path / "pairs.jsonl").write_text('{"a": "Saya mau makan", "b": "I want to eat"}\n')
    step = {"use": "eval-generation", "files": [str(tmp_path / "pairs.jsonl")], "max_new_tokens": 3}
    step["templates"] = [{"instruction": "Translate: {a}", "output": "{b}"}]
    manifest = {"siger": 1, "name": "rt", "model": {"init_from": str(tmp_path / "base")}, "steps": [step]}
    run_manifest(manifest)
    assert calls == []
    run_manifest(dict(manifest, steps=[dict(step, runtime="counting")]), out_dir=tmp_path / "run2")
    assert len(calls) >= 1


def test_a_vanishing_temperature_decodes_greedily(random_model, tok):
    gen = Generator(TorchRuntime(random_model), tok)
    greedy = gen.generate("Saya mau", max_new_tokens=6)
    tiny = gen.generate("Saya mau", max_new_tokens=6, temperature=1e-39, seed=1)
    assert tiny.token_ids == greedy.token_ids
