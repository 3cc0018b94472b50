"""A ByteLevel BPE trained locally with Hugging Face ``tokenizers``.

Byte-level pre-tokenization without a prefix space and no normalizer make every string
round-trip exactly (``decode(encode(s)) == s``). The special tokens are given to the trainer
first, so they get ids 0..N in order and stay atomic. A tokenizer imported with ``siger import
hf`` has them as added tokens wherever its vocabulary left room (its ids are read, not assumed).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from sigerlm_text.tokenizers.base import SPECIAL_TOKENS, TextTokenizer, TokenizerError

FILE = "tokenizer.json"


class BPETokenizer(TextTokenizer):
    kind = "bpe"

    def __init__(self, tokenizer) -> None:
        self._tok = tokenizer
        vocab = tokenizer.get_vocab()
        added = {t.content for t in tokenizer.get_added_tokens_decoder().values()}
        missing = [t for t in SPECIAL_TOKENS if t not in added or t not in vocab]
        if missing:
            raise TokenizerError(
                f"this BPE lacks SigerLM's special tokens {', '.join(missing[:4])}"
                f"{' ...' if len(missing) > 4 else ''} (`siger import hf` adds them to a foreign tokenizer.json)"
            )
        # 0..N in a BPE trained here; wherever `siger import hf` put them in an imported one
        self._special = {t: vocab[t] for t in SPECIAL_TOKENS}

    # -- building ----------------------------------------------------------------------------------
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> BPETokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        if vocab_size < len(SPECIAL_TOKENS) + 256:
            raise TokenizerError(
                f"vocab_size {vocab_size} is too small: it must hold the {len(SPECIAL_TOKENS)} special tokens "
                "and the 256 bytes"
            )
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer=trainer)
        return cls(tokenizer)

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        """From a ``tokenizer.json`` or the folder holding one."""
        from tokenizers import Tokenizer

        path = Path(path)
        file = path / FILE if path.is_dir() else path
        if not file.is_file():
            raise TokenizerError(
                f"no trained BPE at {path} ({FILE} not found); train one with `siger text tokenizer train`"
            )
        try:
            return cls(Tokenizer.from_file(str(file)))
        except Exception as exc:  # tokenizers raises plain Exceptions for malformed files
            raise TokenizerError(f"{file}: not a valid tokenizer file ({exc})") from None

    def save(self, folder: str | Path) -> list[Path]:
        from sigerlm.io import atomic_write

        return [atomic_write(Path(folder) / FILE, self._tok.to_str(pretty=True))]

    # -- use ---------------------------------------------------------------------------------------
    def encode(self, text: str, allow_special: bool = True) -> list[int]:
        return self.encode_batch([text], allow_special)[0]

    def encode_batch(self, texts: Sequence[str], allow_special: bool = True) -> list[list[int]]:
        if allow_special:
            return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]
        # special-token strings in the text are encoded as ordinary text
        return [self._encode_plain(t) for t in texts]

    def _encode_plain(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece, is_special in _split_special(text):
            if is_special:
                # the bytes of a special token's string, as ordinary tokens
                ids += [
                    i for part in (piece[:1], piece[1:]) for i in self._tok.encode(part, add_special_tokens=False).ids
                ]
            elif piece:
                ids += self._tok.encode(piece, add_special_tokens=False).ids
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)

    def stream_decoder(self):
        """A decoder that takes one id at a time and never splits a UTF-8 character."""
        from tokenizers.decoders import DecodeStream

        return DecodeStream(skip_special_tokens=False)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special)

    def fingerprint(self) -> bytes:
        data = json.loads(self._tok.to_str())
        return json.dumps(
            {
                "kind": self.kind,
                "model": data.get("model"),
                "added_tokens": data.get("added_tokens"),
                "pre_tokenizer": data.get("pre_tokenizer"),
                "normalizer": data.get("normalizer"),
            },
            sort_keys=True,
        ).encode()

    @property
    def backend(self):
        return self._tok


def _split_special(text: str) -> Iterator[tuple[str, bool]]:
    """Split text into (piece, is_special_token_string)."""
    import re

    pattern = "(" + "|".join(re.escape(t) for t in sorted(SPECIAL_TOKENS, key=len, reverse=True)) + ")"
    for i, piece in enumerate(re.split(pattern, text)):
        yield piece, bool(i % 2)
