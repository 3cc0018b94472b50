"""What every text tokenizer provides, and the special tokens they share.

The special tokens sit at fixed ids: from 0 in a trained BPE, right after the base vocabulary
in tiktoken. Their order is part of every checkpoint: append new ones, never reorder.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path

from sigerlm.errors import SigerError

#: Chat, language and control tokens, in id order (0..13 in a trained BPE).
BASE_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|pad|>",
    "<|unk|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end_turn|>",
    "<|lang_id|>",
    "<|id|>",
    "<|en|>",
    "<|code|>",
    "<|bos|>",
    "<|eos|>",
    "<|sep|>",
)
#: Language tags (ISO 639-3): Lampung Nyo (dialect O) and Lampung Api (dialect A).
LANGUAGE_TAGS = ("<|abl|>", "<|ljp|>")
THOUGHT_TAGS = ("<thought>", "</thought>")
SPECIAL_TOKENS: tuple[str, ...] = BASE_SPECIAL_TOKENS + LANGUAGE_TAGS + THOUGHT_TAGS


class TokenizerError(SigerError):
    """A tokenizer cannot be built, loaded or matched; the message says what to do."""


class TextTokenizer(ABC):
    """The tokenizer contract: ids for text and back, losslessly, with pinned special tokens."""

    kind: str

    @abstractmethod
    def encode(self, text: str, allow_special: bool = True) -> list[int]:
        """Token ids of ``text``. With ``allow_special``, special-token strings become their ids."""

    @abstractmethod
    def encode_batch(self, texts: Sequence[str], allow_special: bool = True) -> list[list[int]]: ...

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str: ...

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @property
    @abstractmethod
    def special_tokens(self) -> dict[str, int]:
        """Every special token with its id."""

    @abstractmethod
    def fingerprint(self) -> bytes:
        """Bytes that determine the tokenization exactly (what the hash is taken of)."""

    @abstractmethod
    def save(self, folder: str | Path) -> list[Path]:
        """Write the files that ``load`` reads back into ``folder``; return their paths."""

    @property
    def hash(self) -> str:
        """sha256 of the tokenizer's definition: saved models record it."""
        return hashlib.sha256(self.fingerprint()).hexdigest()

    def token_id(self, token: str) -> int:
        try:
            return self.special_tokens[token]
        except KeyError:
            raise TokenizerError(f"'{token}' is not a special token of this tokenizer") from None

    @property
    def eos_id(self) -> int:
        return self.special_tokens["<|eos|>"]

    @property
    def pad_id(self) -> int:
        return self.special_tokens["<|pad|>"]
