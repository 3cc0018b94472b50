"""Built translators and routers, cached in memory and on disk.

Building the translator takes seconds (alignment, phrase tables, language models); the CLI,
the chat commands and the HTTP routes share one per data folder. The built tables are also
pickled under ``$SIGER_CACHE_DIR/lampung`` (default ``~/.cache/sigerlm/lampung``), keyed by the
sizes and modification times of the data files and this package's version, so a second
``siger lampung translate`` starts fast. The cache lives on the user's machine only: it is
derived from the data (the GPL-3.0 meizano dictionary included) and is never packaged.
Set ``SIGER_LAMPUNG_NO_CACHE=1`` to skip it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("sigerlm.lampung")
CACHE_FORMAT = 1
_lock = threading.Lock()
_memory: dict[tuple[str, str], Any] = {}


def _cache_dir() -> Path:
    return Path(os.environ.get("SIGER_CACHE_DIR") or Path.home() / ".cache" / "sigerlm") / "lampung"


def _data_key(data_dir: str | Path | None, kind: str, extra: str = "") -> str:
    from sigerlm.paths import data_dir as find_data_dir
    from sigerlm_lampung import __version__

    root = find_data_dir(data_dir)
    h = hashlib.sha256(f"{kind}|{CACHE_FORMAT}|{__version__}|{root.resolve()}|{extra}".encode())
    for module in sorted(Path(__file__).parent.glob("*.py")):  # the code that builds the tables
        h.update(module.read_bytes())
    for sub in ("lampung/splits", "lampung/sources", "general/corpus"):
        folder = root / sub
        if folder.is_dir():
            for file in sorted(folder.glob("*.jsonl")):
                st = file.stat()
                h.update(f"{file.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def _cached(kind: str, data_dir: str | Path | None, build: Callable[[], Any], extra: str = "") -> Any:
    key = _data_key(data_dir, kind, extra)
    with _lock:
        if (kind, key) in _memory:
            return _memory[(kind, key)]
        use_disk = not os.environ.get("SIGER_LAMPUNG_NO_CACHE")
        file = _cache_dir() / f"{kind}-{key}.pkl"
        value = None
        if use_disk and file.is_file():
            try:
                with file.open("rb") as handle:
                    value = pickle.load(handle)
            except Exception as exc:
                log.warning("ignoring the Lampung cache %s (%s)", file, exc)
                value = None
        if value is None:
            value = build()
            if use_disk:
                from sigerlm.io import atomic_write

                try:
                    atomic_write(file, lambda handle: pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL))
                except OSError as exc:
                    log.warning("could not write the Lampung cache %s (%s)", file, exc)
        _memory[(kind, key)] = value
        return value


def get_translator(
    data_dir: str | Path | None = None,
    meizano_path: str | Path | None = None,
    generate: Callable[[str], str] | None = None,
    fallback_below: float = 0.5,
) -> Any:
    """The translator built from the data folder (train + valid splits, dictionaries); its English
    systems are built (or loaded from the cache) the first time an English direction is asked for.
    Each call returns a new ``Translator`` over the shared tables, with its own ``generate``."""
    from sigerlm_lampung import data as d
    from sigerlm_lampung.translator import (
        Translator,
        build_english_parts,
        build_lampung_parts,
        general_language_models,
    )

    def pairs() -> list:
        return d.dedup(d.load_split("train", data_dir) + d.load_split("valid", data_dir))

    systems, lms = _cached(
        "lampung",
        data_dir,
        lambda: build_lampung_parts(
            data_dir, pairs(), None, meizano_path, general_language_models(data_dir, only=("ind",))
        ),
        extra=str(meizano_path or ""),
    )

    def extend() -> tuple[dict, dict]:
        return _cached(
            "english",
            data_dir,
            lambda: build_english_parts(data_dir, pairs(), general_language_models(data_dir, only=("eng",))),
        )

    return Translator(systems, lms, generate, fallback_below, extend=extend)


def get_router(data_dir: str | Path | None = None) -> Any:
    """The language router trained from the data folder (its held-out report is ``router.report``)."""
    from sigerlm_lampung.router import Router, train_language_id

    def build() -> Any:
        model, report = train_language_id(data_dir)
        router = Router(model)
        router.report = report
        return router

    return _cached("router", data_dir, build)


def model_generate(
    model_dir: str | Path, max_new_tokens: int = 64, adapter: str | Path | None = None, runtime: str = "torch"
) -> Callable[[str], str]:
    """A ``generate(prompt) -> str`` over a SigerLM model folder (a base, or a LoRA-merged one),
    optionally with a LoRA adapter folder on top (needs sigerlm-lora), decoded by a registered
    runtime, for the fallback."""
    from sigerlm.errors import SigerError
    from sigerlm.plugins import make_plugin_manager
    from sigerlm_text.generation import GenerationConfig, Generator, make_runtime
    from sigerlm_text.model import load_text_model

    pm = make_plugin_manager()  # one manager for the model's components and the runtime
    model = load_text_model(model_dir, components=pm)
    if adapter is not None:
        try:
            from sigerlm_lora import load_adapter
        except ImportError as exc:
            raise SigerError("--adapter needs the LoRA plugin: pip install sigerlm-lora") from exc
        load_adapter(model, adapter)
    return generator_generate(
        Generator(make_runtime(model, runtime, None, pm), model.adapter.tokenizer),
        GenerationConfig.build(max_new_tokens=max_new_tokens, temperature=0.0, stop=["\n"]),
    )


def generator_generate(generator: Any, config: Any = None) -> Callable[[str], str]:
    """``generate(prompt) -> str`` over a sigerlm_text ``Generator``: the prompt is the user's
    turn in the chat template (the format the instruction data trains), the answer the
    assistant's."""
    from sigerlm_text.chat_session import PromptBuilder
    from sigerlm_text.generation import GenerationConfig

    config = config or GenerationConfig.build(max_new_tokens=64, temperature=0.0, stop=["\n"])
    builder = PromptBuilder(generator.tokenizer)

    def generate(prompt: str) -> str:
        ids = builder.build([{"role": "user", "content": prompt}])
        return "".join(generator.stream_ids(ids, config))

    return generate
