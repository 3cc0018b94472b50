"""Choosing and loading tokenizers: the ``hybrid`` selector and model folders."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sigerlm_text.tokenizers.base import TextTokenizer, TokenizerError
from sigerlm_text.tokenizers.bpe import FILE as BPE_FILE
from sigerlm_text.tokenizers.bpe import BPETokenizer

TIKTOKEN_FILE = "tokenizer_tiktoken.json"


def build_tokenizer(spec: Any, components: Any = None) -> TextTokenizer:
    """The tokenizer a component spec names (``{use: bpe, path: ...}``), through the registry
    (``components``: a plugin manager; default: every installed plugin)."""
    if components is None:
        from sigerlm.plugins import make_plugin_manager

        components = make_plugin_manager()
    return components.get_component("tokenizers", spec.use).build(options=spec.options)


def load_tokenizer(folder: str | Path) -> TextTokenizer:
    """The tokenizer saved in a model folder."""
    folder = Path(folder)
    if (folder / BPE_FILE).is_file():
        return BPETokenizer.load(folder)
    if (folder / TIKTOKEN_FILE).is_file():
        from sigerlm_text.tokenizers.tiktoken_fallback import TiktokenTokenizer

        return TiktokenTokenizer()
    raise TokenizerError(f"{folder} holds no tokenizer ({BPE_FILE} or {TIKTOKEN_FILE})")


def hybrid(
    path: str | Path | None = None, search: Iterable[str | Path] = (), ranks_file: str | Path | None = None
) -> TextTokenizer:
    """A trained BPE when ``path`` is given or a ``tokenizer.json`` is found in ``search`` (a model
    folder, say); else the tiktoken fallback; else an error naming both ways out."""
    if path is not None:
        return BPETokenizer.load(path)
    for folder in search:
        if (Path(folder) / BPE_FILE).is_file():
            return BPETokenizer.load(folder)
    try:
        from sigerlm_text.tokenizers.tiktoken_fallback import TiktokenTokenizer

        return TiktokenTokenizer(ranks_file)
    except TokenizerError as exc:
        looked = ", ".join(str(s) for s in search) or "nowhere"
        raise TokenizerError(
            f"no tokenizer: no trained BPE (looked in {looked}; train one with `siger text tokenizer train`) "
            f"and no tiktoken fallback ({exc})"
        ) from None
