"""``siger export hf`` and ``siger import hf``: a SigerLM text model in transformers (run where
SigerLM cannot be imported) and a transformers Mamba folder as a SigerLM model folder."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from sigerlm.assemble import build_model, load_model
from sigerlm.model.config import SigerConfig
from sigerlm_testkit import add_plugin
from sigerlm_text import hooks
from sigerlm_text.chat_session import PromptBuilder
from sigerlm_text.interop import InteropError
from sigerlm_text.model import lm_forward
from sigerlm_text.tokenizers.bpe import BPETokenizer

pytest.importorskip("transformers", reason="transformers is a test dependency (sigerlm-text[test])")

MESSAGES = [
    {"role": "system", "content": "Jawab singkat."},
    {"role": "user", "content": "Api kabar? é 👋"},
    {"role": "assistant", "content": "<thought>ramah</thought>Baik, terima kasih."},
    {"role": "user", "content": "I want to eat\nin the village."},
]
#: a Python that cannot import any sigerlm distribution
NO_SIGERLM = """
import sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0].startswith("sigerlm"):
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Refuse())
"""


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, kit):
    return kit.tiny_text_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture
def pm(plugin_manager):
    add_plugin(plugin_manager, hooks, "text")
    return plugin_manager


def test_hf_export_runs_in_transformers_without_sigerlm(model_dir, pm, tmp_path, kit):
    TEXTS, PROMPT = kit.TEXTS, kit.PROMPT
    out = tmp_path / "hf"
    done = kit.siger_cli("export", "hf", model_dir, "--out", out, "--license", "apache-2.0")
    assert done.returncode == 0, done.stderr
    assert f"exported {model_dir} -> {out} (text:hf)" in done.stdout
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md"} <= {
        p.name for p in out.iterdir()
    }
    model = load_model(model_dir, pm)
    tok = model.adapter.tokenizer
    prompt = tok.encode(PROMPT)
    script = NO_SIGERLM + textwrap.dedent(
        f"""
        import json, torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        torch.set_num_threads(1)
        tok = AutoTokenizer.from_pretrained({str(out)!r})
        model = AutoModelForCausalLM.from_pretrained({str(out)!r}).eval()
        ids = tok({PROMPT!r})["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].tolist()
            greedy = list(ids)
            for _ in range(20):
                greedy.append(int(model(torch.tensor([greedy])).logits[0, -1].argmax()))
            generated = model.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False)[0].tolist()
        chat = tok.apply_chat_template({MESSAGES!r}, add_generation_prompt=True)
        chat = chat["input_ids"] if hasattr(chat, "keys") else chat
        text = tok.decode(tok({TEXTS[2]!r})["input_ids"])
        loaded = sorted(m for m in __import__("sys").modules if m.startswith("sigerlm"))
        print(json.dumps(dict(ids=ids, logits=logits, greedy=greedy, generated=generated, chat=chat, text=text,
                              loaded=loaded, ends=model.generation_config.eos_token_id, type=type(model).__name__)))
        """
    )
    ran = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert ran.returncode == 0, ran.stderr
    got = json.loads(ran.stdout.strip().splitlines()[-1])
    assert got["loaded"] == [] and got["type"] == "MambaForCausalLM"
    assert got["ids"] == prompt  # the same tokenizer, no BOS added
    with torch.no_grad():
        ours = lm_forward(model, torch.tensor([prompt])).logits[0]
    assert (torch.tensor(got["logits"]) - ours).abs().max() <= 1e-4
    assert got["greedy"] == kit.greedy(model, prompt, 20)
    ends = [tok.token_id(t) for t in ("<|eos|>", "<|end_turn|>", "<|endoftext|>")]
    assert got["ends"] == ends
    assert got["generated"] == got["greedy"]  # generate() with the exported generation config
    assert got["chat"] == PromptBuilder(tok).build(MESSAGES)  # the chat template renders SigerLM's ids
    assert got["text"] == TEXTS[2]
    card = (out / "README.md").read_text()
    assert "license: apache-2.0" in card and f"{sum(p.numel() for p in model.parameters()):,} parameters" in card
    assert "Not recorded: the folder holds no run metrics" in card


def test_model_card_takes_perplexity_data_and_merged_adapter_from_the_run(model_dir, pm, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(model_dir, run / "model")
    (run / "model" / "merged_adapter.json").write_text(json.dumps({"name": "lo-id", "rank": 8}))
    steps = [
        {
            "use": "core:train",
            "results": {"valid_perplexity": 146.3236, "unigram_perplexity": 1222.59, "model": "runs/x/model"},
        }
    ]
    (run / "metrics.json").write_text(json.dumps({"steps": steps}))
    (run / "manifest.resolved.yaml").write_text(
        "data:\n  train: {use: 'text:text_completion', files: [corpus.jsonl]}\n"
    )
    model = load_model(run / "model", pm)
    out = pm.get_component("exporters", "hf").build(model, tmp_path / "hf", options={"name": "Siger Lampung"})
    card = (out / "README.md").read_text()
    assert "# Siger Lampung" in card and "license: other" in card
    assert "Validation perplexity **146.32**" in card and "1222.6" in card
    assert "files: [corpus.jsonl]" in card or "- corpus.jsonl" in card
    assert '"name": "lo-id"' in card


def test_what_transformers_and_llama_cpp_cannot_run_is_refused(pm, model_dir, kit):
    config = SigerConfig.from_profile("tiny", d_model=16, n_layers=2)
    tok = BPETokenizer.train(kit.TEXTS, vocab_size=300, min_frequency=1)
    text = {"use": "text", "vocab_size": 300}
    mixed = build_model(pm, config, text, [{"use": "ssm"}, {"use": "identity"}])
    mixed.adapter.attach(tok)
    for name in ("hf", "gguf"):
        exporter = pm.get_component("exporters", name)
        with pytest.raises(InteropError, match=r"only the Mamba block; layer 1 uses 'testkit:identity' \(MoE"):
            exporter.build(mixed, "unused", options={})
    other = build_model(pm, config, {"use": "random-embedding"})
    with pytest.raises(
        InteropError, match="runs token models only; this model's adapter is 'testkit:random-embedding'"
    ):
        pm.get_component("exporters", "hf").build(other, "unused", options={})
    no_tokenizer = build_model(pm, config, text)
    with pytest.raises(InteropError, match="needs the model's BPE tokenizer"):
        pm.get_component("exporters", "hf").build(no_tokenizer, "unused", options={})
    model = load_model(model_dir, pm)
    model.saver = lambda folder, plugins: folder  # what a LoRA transform sets
    with pytest.raises(InteropError, match="unmerged adapter; merge it first"):
        pm.get_component("exporters", "hf").build(model, "unused", options={})


def test_moe_blocks_are_refused(pm):
    moe = pytest.importorskip("sigerlm_moe.hooks")
    add_plugin(pm, moe, "moe")
    config = SigerConfig.from_profile("tiny", d_model=16, n_layers=2)
    model = build_model(pm, config, {"use": "text", "vocab_size": 300}, [{"use": "ssm"}, {"use": "moe"}])
    with pytest.raises(InteropError, match="layer 1 uses 'moe:moe'"):
        pm.get_component("exporters", "hf").build(model, "unused", options={})


def random_mamba_folder(folder, texts, vocab_rows=280, tie=True):
    """A randomly initialised MambaForCausalLM saved by transformers, with a foreign ByteLevel
    BPE (its own <|endoftext|> and <s>, none of SigerLM's other special tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import MambaConfig, MambaForCausalLM

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=270, special_tokens=["<|endoftext|>", "<s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    torch.manual_seed(5)
    config = MambaConfig(
        vocab_size=vocab_rows, hidden_size=32, state_size=8, num_hidden_layers=2, tie_word_embeddings=tie
    )
    hf = MambaForCausalLM(config).eval()
    hf.save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    return hf, tok


def test_import_hf_round_trips_trains_and_serves(pm, run_manifest, tmp_path, kit):
    TEXTS = kit.TEXTS
    hf, foreign = random_mamba_folder(tmp_path / "mamba", TEXTS)
    done = kit.siger_cli("import", "hf", tmp_path / "mamba", "--out", tmp_path / "siger")
    assert done.returncode == 0, done.stderr
    assert f"imported {tmp_path / 'mamba'} -> {tmp_path / 'siger'}" in done.stdout
    assert "added special tokens the tokenizer lacked: <|pad|> <|unk|> <|system|>" in done.stdout
    assert "<|endoftext|>" not in done.stdout.split("lacked:")[1].splitlines()[0]  # it had that one
    assert "new embedding rows" in done.stdout  # 270 + 19 tokens > 280 rows

    model = load_model(tmp_path / "siger", pm)
    tok = model.adapter.tokenizer
    assert tok.token_id("<|endoftext|>") == 0 and tok.token_id("<|pad|>") >= 270
    ids = torch.tensor([foreign.encode(TEXTS[2]).ids])
    assert ids.tolist() == [tok.encode(TEXTS[2])]  # the same tokenization
    with torch.no_grad():
        ours = lm_forward(model, ids).logits
        theirs = hf(ids).logits
    assert (ours[..., :280] - theirs).abs().max() <= 1e-4  # SigerLM's kernels, transformers' logits
    assert ours.shape[-1] == tok.vocab_size

    # and back: exported again, every original tensor is bit for bit the one transformers saved
    from transformers import MambaForCausalLM

    pm.get_component("exporters", "hf").build(model, tmp_path / "back", options={})
    back = MambaForCausalLM.from_pretrained(tmp_path / "back").eval()
    original = hf.state_dict()
    for name, tensor in back.state_dict().items():
        assert torch.equal(
            tensor[: original[name].shape[0]] if "embeddings" in name or "lm_head" in name else tensor, original[name]
        ), name
    with torch.no_grad():
        assert (back(ids).logits[..., :280] - theirs).abs().max() <= 1e-5

    # trains one step from the imported folder (model.init_from takes its tokenizer)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    manifest = {
        "siger": 1,
        "name": "imported",
        "model": {"init_from": str(tmp_path / "siger")},
        "data": {"train": {"use": "text_completion", "files": [str(tmp_path / "train.jsonl")], "seq_len": 16}},
        "steps": [{"use": "train", "max_steps": 1, "lr": 0.01, "warmup_steps": 0, "progress": False}],
    }
    result = run_manifest(manifest, out_dir=tmp_path / "run").results["steps"][0]["results"]
    assert result["steps"] == 1 and result["final_loss"] > 0
    trained = load_model(tmp_path / "run" / "model", pm)
    assert trained.adapter.tokenizer.hash == tok.hash
    changed = trained.backbone.layers[0].mixer.in_proj.weight
    assert not torch.equal(changed, model.backbone.layers[0].mixer.in_proj.weight)

    # and serves
    pytest.importorskip("sigerlm_serving", reason="serving is tried where sigerlm-serving is installed")
    from fastapi.testclient import TestClient

    from sigerlm.plugins import make_plugin_manager
    from sigerlm_serving.app import create_app
    from sigerlm_serving.settings import ServeSettings

    settings = ServeSettings(model_dir=str(tmp_path / "siger"), db=str(tmp_path / "serve.db"))
    with TestClient(create_app(settings, make_plugin_manager(load="none"))) as client:
        reply = client.post(
            "/v1/chat/completions",
            json={"model": "SIGER", "max_tokens": 4, "messages": [{"role": "user", "content": "Tabik pun"}]},
        )
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["completion_tokens"] >= 1


def test_untied_head_imports_exports_and_exports_to_onnx(pm, tmp_path, kit):
    """A Mamba with its own LM head keeps it both ways; the imported folder exports to ONNX."""
    from transformers import MambaForCausalLM

    from sigerlm_text.interop import import_hf

    hf, foreign = random_mamba_folder(tmp_path / "mamba", kit.TEXTS, vocab_rows=320, tie=False)
    report = import_hf(tmp_path / "mamba", tmp_path / "siger")
    assert report["new_rows"] == 0 and report["vocab_size"] == 320  # 270 + 19 fit in 320 rows
    model = load_model(tmp_path / "siger", pm)
    assert model.adapter.lm_head is not None
    ids = torch.tensor([foreign.encode(kit.TEXTS[1]).ids])
    pm.get_component("exporters", "hf").build(model, tmp_path / "back", options={"dtype": "float32"})
    back = MambaForCausalLM.from_pretrained(tmp_path / "back").eval()
    assert not back.config.tie_word_embeddings
    assert torch.equal(back.lm_head.weight, hf.lm_head.weight)
    with torch.no_grad():
        assert (lm_forward(model, ids).logits - hf(ids).logits).abs().max() <= 1e-4
        assert (back(ids).logits - hf(ids).logits).abs().max() <= 1e-5
    onnx = pytest.importorskip("sigerlm_onnx.hooks", reason="ONNX export is tried where sigerlm-onnx is installed")
    add_plugin(pm, onnx, "onnx")
    folder = pm.get_component("exporters", "onnx").build(model, tmp_path / "onnx", options={"parity": False})
    assert (folder / "model.onnx").is_file() and load_model(
        folder, pm
    ).adapter.tokenizer.hash == model.adapter.tokenizer.hash


def test_import_hf_errors_name_the_problem(tmp_path):
    from sigerlm_text.interop import import_hf

    with pytest.raises(InteropError, match="holds no config.json: not a transformers model folder"):
        import_hf(tmp_path, tmp_path / "out")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(InteropError, match="is a 'gpt2' model; `siger import hf` reads Mamba folders"):
        import_hf(tmp_path, tmp_path / "out")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba"}))
    with pytest.raises(InteropError, match="holds no tokenizer.json"):
        import_hf(tmp_path, tmp_path / "out")
