"""Chat sessions, the prompt template, commands from plugins, and `siger chat` with piped input."""

import subprocess
import sys
from pathlib import Path

import torch

from sigerlm import hookimpl
from sigerlm.model.config import SigerConfig
from sigerlm.runtime import TorchRuntime
from sigerlm_testkit import add_plugin
from sigerlm_text import hooks
from sigerlm_text.chat_session import ChatSession, PromptBuilder, collect_commands
from sigerlm_text.generation import GenerationConfig, Generator
from sigerlm_text.model import text_model
from sigerlm_text.tokenizers.bpe import BPETokenizer

TEXTS = ["Nyak haga mengan di pekon.", "Saya mau makan di kampung.", "I want to eat."] * 20


def session(**kw):
    tok = BPETokenizer.train(TEXTS, vocab_size=300, min_frequency=1)
    torch.manual_seed(0)
    model = text_model(SigerConfig.from_profile("tiny"), 300, tok).eval()
    return ChatSession(Generator(TorchRuntime(model), tok), **kw), model


def test_prompt_opens_the_assistant_turn():
    s, model = session(system="Kamu penerjemah.")
    s.history.append({"role": "user", "content": "halo"})
    text = model.adapter.tokenizer.decode(PromptBuilder(model.adapter.tokenizer).build(s.messages()))
    assert text == "<|system|>Kamu penerjemah.<|end_turn|><|user|>halo<|end_turn|><|assistant|>"


def test_history_grows_and_the_oldest_turns_are_dropped_to_fit():
    s, _ = session(config=GenerationConfig(max_new_tokens=4), max_context_tokens=60, system="S")
    for i in range(8):
        s.send(f"pesan nomor {i} yang cukup panjang untuk memenuhi anggaran")
    assert s.dropped_turns > 0
    assert len(s.builder.build(s.messages()[:-1])) + 4 <= 60 or len(s.history) <= 2
    assert s.messages()[0] == {"role": "system", "content": "S"}  # the system prompt stays
    assert s.history[-1]["role"] == "assistant" and "nomor 7" in s.history[-2]["content"]


def test_plugins_add_chat_commands(plugin_manager):
    class Lampung:
        @hookimpl(optionalhook=True)
        def register_chat_commands(self, register):
            register("/lo-id", lambda session, arg: f"translated: {arg}", "Lampung to Indonesian")

    add_plugin(plugin_manager, hooks, "text")
    add_plugin(plugin_manager, Lampung(), "lampung-test")
    commands = collect_commands(plugin_manager)
    assert {"/reset", "/system", "/temp", "/lo-id"} <= set(commands)
    assert commands["/lo-id"][0](None, "Nyak haga") == "translated: Nyak haga"


def test_plugins_answer_plain_messages_before_the_model(plugin_manager):
    from sigerlm_text.chat_session import collect_router

    class Translator:
        @hookimpl(optionalhook=True)
        def route_chat_message(self, session, message):
            return f"translated: {message[1:]}" if message.startswith("!") else None

    add_plugin(plugin_manager, hooks, "text")
    assert collect_router(plugin_manager) is None  # no plugin routes: the model answers everything
    add_plugin(plugin_manager, Translator(), "translator-test")
    s, _ = session(config=GenerationConfig(max_new_tokens=3))
    s.router = collect_router(plugin_manager)
    assert s.send("!nyak haga") == "translated: nyak haga"
    assert s.history == [
        {"role": "user", "content": "!nyak haga"},
        {"role": "assistant", "content": "translated: nyak haga"},
    ]
    model_reply = s.send("halo")  # not the router's: the model answers, after the routed turn
    assert not model_reply.startswith("translated") and s.history[-2] == {"role": "user", "content": "halo"}
    assert s.prompt_ids()[: len(s.builder.build(s.history[:2], open_assistant=False))] == s.builder.build(
        s.history[:2], open_assistant=False
    )  # the routed turn is part of the conversation
    s.routing = False
    assert not s.send("!nyak").startswith("translated")


def test_siger_chat_with_piped_input(tmp_path):
    _, model = session()
    model.save_pretrained(tmp_path / "m")
    siger = Path(sys.executable).with_name("siger")
    lines = "halo\n/temp 0.7\n/temp hot\n/system Jawab singkat.\n/nope\n/help\nlagi\n/reset\n/exit\nnot read\n"
    out = subprocess.run(
        [siger, "chat", tmp_path / "m", "--max-new-tokens", "5", "--seed", "1"],
        input=lines,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "(temperature 0.7)" in text
    assert "error: could not convert string to float: 'hot'" in text
    assert "(system prompt set; history cleared)" in text
    assert "unknown command /nope" in text and "/reset  forget the conversation" in text
    assert "(history cleared)" in text
    assert len([line for line in text.splitlines() if not line.startswith(("(", "/", "unknown", "error"))]) >= 2
