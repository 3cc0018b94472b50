"""The plugin's hooks: datasets, chat commands through sigerlm-text, and loading without the
serving plugin."""

import types

import pytest

from sigerlm_lampung import hooks
from sigerlm_testkit import add_plugin


def test_chat_commands_through_the_text_plugin(plugin_manager, monkeypatch, translator):
    from sigerlm_lampung import service
    from sigerlm_lampung.translator import Translator
    from sigerlm_text import hooks as text_hooks
    from sigerlm_text.chat_session import collect_commands

    monkeypatch.setattr(
        service,
        "get_translator",
        lambda data_dir=None, meizano_path=None, generate=None, fallback_below=0.5: Translator(
            translator.systems, translator.lms, generate, fallback_below, extend=translator.extend
        ),
    )
    add_plugin(plugin_manager, text_hooks, "text")
    add_plugin(plugin_manager, hooks, "lampung")
    commands = collect_commands(plugin_manager)
    assert {"/lo-id", "/id-lo", "/lo-en", "/en-lo", "/chat", "/reason", "/auto"} <= set(commands)
    session = types.SimpleNamespace(send=lambda message: f"model: {message}")
    assert commands["/lo-id"][0](session, "sanak ino mak sihat").startswith("anak itu tidak sehat\n[learned")
    assert commands["/id-lo"][0](session, "rumah itu tidak bagus").startswith("nuwo ino mak wawai")
    assert "healthy" in commands["/lo-en"][0](session, "sanak ino mak sihat")
    assert commands["/chat"][0](session, "halo") == "model: halo"
    assert commands["/chat"][0](None, "halo").startswith("(general chat needs a model")
    assert commands["/lo-id"][0](session, "  ").startswith("usage")


def test_reason_and_auto(monkeypatch, translator):
    from sigerlm_lampung import chat, service
    from sigerlm_lampung.router import LanguageId, Router
    from sigerlm_lampung.translator import Translator

    monkeypatch.setattr(service, "get_translator", lambda **kw: Translator(translator.systems, translator.lms))
    model = LanguageId().fit(
        ["nyak haga mengan punyeu sanak", "saya mau makan apa itu", "i want to eat"], ["abl", "ind", "eng"]
    )
    monkeypatch.setattr(service, "get_router", lambda data_dir=None: Router(model))
    text = chat.reason(None, "sanak ino")
    assert text.splitlines()[0].startswith("sanak: anak (phrase table")
    assert text.splitlines()[-1].startswith("=> anak itu")
    session = types.SimpleNamespace(send=lambda message: f"model: {message}")
    assert chat.auto(session, "nyak haga mengan punyeu").startswith("(lampung_to_id)")
    assert chat.auto(session, "i want to eat") == "model: i want to eat"


def test_the_dataset_renders_instruction_rows(tiny_data, tmp_path, plugin_manager):
    pytest.importorskip("tiktoken")
    run = types.SimpleNamespace(seed=0, rank=0, world_size=1, out_dir=tmp_path, state={})
    options = hooks.LampungParallelOptions(
        split="train",
        data_dir=str(tiny_data),
        tokenizer="tiktoken",
        seq_len=64,
        batch_size=2,
        directions=["abl-ind", "ind-abl"],
    )
    dataset = hooks.lampung_parallel(run, options)
    batches = list(dataset)
    assert len(batches) == len(dataset) > 0
    assert batches[0]["input_ids"].shape[0] == 2
    assert (batches[0]["labels"] != -100).any()  # loss on the translation
    files = list(tmp_path.glob("lampung-train-*.jsonl"))
    assert len(files) == 1 and "Terjemahkan Lampung O ke Bahasa Indonesia" in files[0].read_text()
    with pytest.raises(ValueError):
        hooks.LampungParallelOptions(split="test")


def test_loads_without_the_serving_plugin(plugin_manager):
    # register_routes and register_chat_commands are optional: no spec for them here, no error
    add_plugin(plugin_manager, hooks, "lampung")
    plugin_manager.check_pending()
    assert plugin_manager.hook.register_routes.spec is None  # nobody declared it, and that is fine


def test_a_manifest_trains_on_lampung_parallel(plugin_manager, run_manifest, tiny_data):
    pytest.importorskip("tiktoken")
    from sigerlm_text import hooks as text_hooks

    add_plugin(plugin_manager, text_hooks, "text")
    add_plugin(plugin_manager, hooks, "lampung")
    data = {
        "use": "lampung-parallel",
        "data_dir": str(tiny_data),
        "tokenizer": "tiktoken",
        "seq_len": 48,
        "batch_size": 4,
    }
    manifest = {
        "siger": 1,
        "name": "lampung-parallel",
        "plugins": ["text", "lampung"],
        "seed": 0,
        "model": {"profile": "tiny", "config": {"max_seq_len": 64}, "adapter": {"use": "text", "vocab_size": 100300}},
        "data": {"train": {**data, "directions": ["abl-ind", "ind-abl"]}, "valid": {**data, "split": "valid"}},
        "steps": [{"use": "train", "max_steps": 2, "eval_every": 2, "eval_batches": 1, "checkpoint_every": 2}],
    }
    results = run_manifest(manifest)
    step = results.results["steps"][0]["results"]
    assert step["steps"] == 2 and step["valid_loss"] > 0
    bad = {**manifest, "data": {"train": {**data, "split": "test"}}}
    with pytest.raises(Exception, match="split"):
        run_manifest(bad)


def test_siger_chat_routes_plain_messages_through_the_text_plugins_hook(monkeypatch, translator, plugin_manager):
    import torch

    from sigerlm.model.config import SigerConfig
    from sigerlm.runtime import TorchRuntime
    from sigerlm_lampung import chat, service
    from sigerlm_lampung.router import LanguageId, Router
    from sigerlm_lampung.translator import Translator
    from sigerlm_text import hooks as text_hooks
    from sigerlm_text.chat_session import ChatSession, collect_router
    from sigerlm_text.generation import GenerationConfig, Generator
    from sigerlm_text.model import text_model
    from sigerlm_text.tokenizers.bpe import BPETokenizer

    monkeypatch.setattr(
        service, "get_translator", lambda **kw: Translator(translator.systems, translator.lms, kw.get("generate"))
    )
    model = LanguageId().fit(
        ["nyak haga mengan punyeu sanak", "saya mau makan apa itu", "i want to eat"], ["abl", "ind", "eng"]
    )
    monkeypatch.setattr(service, "get_router", lambda data_dir=None: Router(model))
    tok = BPETokenizer.train(["halo apa kabar", "nyak haga mengan"] * 20, vocab_size=300, min_frequency=1)
    torch.manual_seed(0)
    lm = text_model(SigerConfig.from_profile("tiny"), 300, tok).eval()
    session = ChatSession(Generator(TorchRuntime(lm), tok), config=GenerationConfig(max_new_tokens=3))
    add_plugin(plugin_manager, text_hooks, "text")
    add_plugin(plugin_manager, hooks, "lampung")
    session.router = collect_router(plugin_manager)  # what siger chat does: routing is on by default

    reply = session.send("nyak haga mengan punyeu")
    assert reply.startswith("(lampung_to_id) ") and "makan ikan" in reply
    assert session.history[-2:] == [
        {"role": "user", "content": "nyak haga mengan punyeu"},
        {"role": "assistant", "content": reply},
    ]
    session.send("saya mau makan apa")  # Indonesian chat: the model answers
    assert session.history[-1]["role"] == "assistant" and not session.history[-1]["content"].startswith("(")
    assert not chat.chat(session, "nyak haga mengan punyeu").startswith("(lampung_to_id)")  # /chat: the model
    assert chat.auto(session, "off").startswith("(automatic routing off")
    session.send("nyak haga mengan punyeu")
    assert not session.history[-1]["content"].startswith("(lampung_to_id)")  # the model again
    assert chat.auto(session, "on").startswith("(automatic routing on")
    assert session.send("nyak haga mengan punyeu").startswith("(lampung_to_id)")
    assert chat.auto(None, "on") == "(automatic routing needs a chat session)"
