"""Text dataset sources: ``text_completion``, ``instruction_jsonl`` and ``chat_jsonl``.

All of them stream: files are read a line at a time and tokenized in batches into an on-disk
cache of token ids (memory-mapped), keyed by the tokenizer's hash and a hash of the sources
and options, so a second run reads the cache instead of tokenizing again. Batches are then
cut from the memory map.

- ``text_completion``: documents (a ``.txt`` file, or the ``text`` field of each JSONL row)
  joined with ``<|endoftext|>``; windows of ``seq_len + 1`` tokens every ``stride`` tokens;
  ``input_ids = window[:-1]``, ``labels = window[1:]``.
- ``instruction_jsonl`` / ``chat_jsonl``: one conversation per row, rendered with the chat
  template; labels only on the assistant's content and its ``<|end_turn|>``; padded with
  ``<|pad|>`` (label -100) to the longest example of the batch, cut at ``seq_len + 1``.

Rows that cannot be used are skipped and counted; ``dataset.problems`` lists each as
``file:line: reason`` and the run log shows the first ones.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sigerlm.errors import SigerError
from sigerlm.io import atomic_directory, read_jsonl
from sigerlm_text.chat import RowError, check_messages, fill_template, instruction_to_messages, render, row_matches
from sigerlm_text.tokenizers.base import TextTokenizer

log = logging.getLogger("sigerlm.text")
CACHE_FORMAT = 1
ENCODE_BATCH = 256


def cache_root() -> Path:
    return Path(os.environ.get("SIGER_CACHE_DIR") or Path.home() / ".cache" / "sigerlm") / "tokens"


def files_digest(files: list[Path], extra: dict[str, Any]) -> str:
    h = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    for file in files:
        h.update(str(file.name).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def expand(paths: list[str], suffixes: tuple[str, ...]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        path = Path(p).expanduser()
        if path.is_dir():
            found = sorted(f for f in path.rglob("*") if f.suffix in suffixes)
            if not found:
                raise SigerError(f"{path}: no {' or '.join(suffixes)} files")
            out += found
        elif path.is_file():
            out.append(path)
        else:
            raise SigerError(f"{path}: file not found")
    return out


class TokenCache:
    """Token ids (uint32), an optional label mask (uint8) and example offsets, memory-mapped."""

    def __init__(self, folder: Path):
        meta = json.loads((folder / "meta.json").read_text())
        self.folder = folder
        self.meta = meta
        self.ids = (
            np.memmap(folder / "ids.bin", dtype=np.uint32, mode="r", shape=(meta["tokens"],))
            if meta["tokens"]
            else np.zeros(0, np.uint32)
        )
        self.mask = (
            np.memmap(folder / "mask.bin", dtype=np.uint8, mode="r", shape=(meta["tokens"],))
            if meta["has_mask"] and meta["tokens"]
            else None
        )
        self.offsets = np.load(folder / "offsets.npy")

    @classmethod
    def build(
        cls, key: str, examples: Iterator[tuple[list[int], list[bool] | None]], info: Callable[[], dict[str, Any]]
    ) -> TokenCache:
        folder = cache_root() / key
        if (folder / "meta.json").is_file():
            log.info("token cache hit: %s", folder)
            return cls(folder)
        offsets = [0]
        has_mask = False
        with atomic_directory(folder) as tmp:
            with open(tmp / "ids.bin", "wb") as ids_file, open(tmp / "mask.bin", "wb") as mask_file:
                for ids, mask in examples:
                    np.asarray(ids, dtype=np.uint32).tofile(ids_file)
                    if mask is not None:
                        has_mask = True
                        np.asarray(mask, dtype=np.uint8).tofile(mask_file)
                    offsets.append(offsets[-1] + len(ids))
            np.save(tmp / "offsets.npy", np.asarray(offsets, dtype=np.int64))
            meta = dict(
                info(), format=CACHE_FORMAT, tokens=int(offsets[-1]), examples=len(offsets) - 1, has_mask=has_mask
            )
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        log.info("token cache written: %s (%d tokens)", folder, offsets[-1])
        return cls(folder)


class _Base:
    kind = ""

    def __init__(
        self,
        run: Any,
        tokenizer: TextTokenizer,
        files: list[Path],
        seq_len: int,
        batch_size: int,
        shuffle: bool,
        options: dict[str, Any],
    ):
        self.seed = getattr(run, "seed", 0)
        self.rank = getattr(run, "rank", 0)
        self.world_size = getattr(run, "world_size", 1)
        self.tokenizer, self.files = tokenizer, files
        self.seq_len, self.batch_size, self.shuffle = seq_len, batch_size, shuffle
        self.problems: list[str] = []
        self.epoch = 0
        digest = files_digest(files, dict(options, kind=self.kind, format=CACHE_FORMAT))
        key = f"{self.kind}-{tokenizer.hash[:16]}-{digest[:16]}"
        self.cache = TokenCache.build(
            key,
            self._examples(),
            lambda: {
                "kind": self.kind,
                "files": [str(f) for f in files],
                "tokenizer": tokenizer.hash,
                "problems": self.problems,
            },
        )
        self.problems = list(self.cache.meta.get("problems", []))  # also when the cache was already there
        if self.problems:
            log.warning("%s: %d rows skipped, first: %s", self.kind, len(self.problems), "; ".join(self.problems[:5]))

    def _rows(self, files: list[Path] | None = None) -> Iterator[tuple[Path, int, Any]]:
        for file in self.files if files is None else files:
            for number, row, error in read_jsonl(file):
                if error is not None:
                    self.problems.append(f"{file}:{number}: {error}")
                else:
                    yield file, number, row

    def _examples(self) -> Iterator[tuple[list[int], list[bool] | None]]:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Choose the shuffle of the next pass (the train step restores it when resuming)."""
        self.epoch = epoch

    def _order(self, n: int) -> np.ndarray:
        order = np.arange(n)
        if self.shuffle:
            np.random.default_rng(self.seed + 7919 * self.epoch).shuffle(order)
        return order[self.rank :: self.world_size]


class TextCompletion(_Base):
    kind = "text_completion"

    def __init__(self, *args: Any, field: str, stride: int, **kwargs: Any):
        self.field = field
        super().__init__(*args, **kwargs)
        self.stride = stride
        total = self.cache.meta["tokens"]
        self.starts = (
            np.arange(0, max(0, total - (self.seq_len + 1)) + 1, stride)
            if total > self.seq_len
            else np.zeros(0, np.int64)
        )
        if len(self.starts) == 0:
            raise SigerError(f"text_completion: {total} tokens, fewer than one window of {self.seq_len + 1}")

    def _documents(self) -> Iterator[str]:
        """Each document's text, then "" where it ends (where ``<|endoftext|>`` goes)."""
        for file in self.files:
            if file.suffix == ".txt":  # one document, read in blocks of lines
                with file.open(encoding="utf-8") as handle:
                    while block := "".join(itertools.islice(handle, 1000)):
                        yield block
                yield ""
                continue
            for _, number, row in self._rows([file]):
                text = row.get(self.field) if isinstance(row, dict) else None
                if not isinstance(text, str) or not text.strip():
                    self.problems.append(f"{file}:{number}: no text in field '{self.field}'")
                    continue
                yield text
                yield ""

    def _examples(self) -> Iterator[tuple[list[int], list[bool] | None]]:
        eot = self.tokenizer.token_id("<|endoftext|>")
        pending: list[str] = []

        def flush() -> Iterator[tuple[list[int], None]]:
            for piece, ids in zip(pending, self.tokenizer.encode_batch(pending, allow_special=False), strict=True):
                yield (ids + [eot] if piece == "" else ids), None

        for doc in self._documents():
            pending.append(doc)
            if len(pending) >= ENCODE_BATCH:
                yield from flush()
                pending = []
        yield from flush()

    def __len__(self) -> int:
        return len(self._order(len(self.starts))) // self.batch_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import torch

        order = self._order(len(self.starts))
        self.epoch += 1
        n = self.seq_len + 1
        for b in range(len(order) // self.batch_size):
            starts = self.starts[order[b * self.batch_size : (b + 1) * self.batch_size]]
            windows = torch.from_numpy(np.stack([self.cache.ids[s : s + n] for s in starts]).astype(np.int64))
            yield {"input_ids": windows[:, :-1], "labels": windows[:, 1:]}


class _Conversations(_Base):
    def _messages(self, row: Any) -> list[dict[str, str]]:
        raise NotImplementedError

    def _conversations(self, row: dict[str, Any]) -> list[list[dict[str, str]]]:
        return [self._messages(row)]

    def _examples(self) -> Iterator[tuple[list[int], list[bool] | None]]:
        for file, number, row in self._rows():
            try:
                if not isinstance(row, dict):
                    raise RowError("not an object")
                rendered = [render(self.tokenizer, messages) for messages in self._conversations(row)]
            except RowError as exc:
                self.problems.append(f"{file}:{number}: {exc}")
                continue
            yield from rendered

    def __len__(self) -> int:
        return len(self._order(self.cache.meta["examples"])) // self.batch_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import torch

        order = self._order(self.cache.meta["examples"])
        self.epoch += 1
        pad, n = self.tokenizer.pad_id, self.seq_len + 1
        offsets, ids, mask = self.cache.offsets, self.cache.ids, self.cache.mask
        for b in range(len(order) // self.batch_size):
            rows = order[b * self.batch_size : (b + 1) * self.batch_size]
            spans = [(offsets[i], min(offsets[i + 1], offsets[i] + n)) for i in rows]
            width = max(e - s for s, e in spans)
            tokens = np.full((len(rows), width), pad, dtype=np.int64)
            labels = np.full((len(rows), width), -100, dtype=np.int64)
            for r, (s, e) in enumerate(spans):
                span = ids[s:e].astype(np.int64)  # int64 before -100 enters (uint32 would wrap)
                tokens[r, : e - s] = span
                labels[r, : e - s] = np.where(mask[s:e] > 0, span, -100)
            tokens_t, labels_t = torch.from_numpy(tokens), torch.from_numpy(labels)
            yield {"input_ids": tokens_t[:, :-1], "labels": labels_t[:, 1:]}


class InstructionJsonl(_Conversations):
    """Instruction rows; or, with ``templates``, examples formatted from any row's fields."""

    kind = "instruction_jsonl"

    def __init__(
        self,
        *args: Any,
        templates: list[dict[str, str]] | None = None,
        where: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        self.templates = templates or []
        self.where = where or {}
        super().__init__(*args, **kwargs)

    def _messages(self, row: dict[str, Any]) -> list[dict[str, str]]:
        return instruction_to_messages(row)

    def _conversations(self, row: dict[str, Any]) -> list[list[dict[str, str]]]:
        if not row_matches(row, self.where):
            return []
        if not self.templates:
            return [self._messages(row)]
        # a template whose fields this row lacks (no English side, say) does not apply to it
        filled = (fill_template(template, row) for template in self.templates)
        return [self._messages(f) for f in filled if f is not None]


class ChatJsonl(_Conversations):
    kind = "chat_jsonl"

    def _messages(self, row: dict[str, Any]) -> list[dict[str, str]]:
        return check_messages(row.get("messages"))


def resolve_tokenizer(run: Any, spec: Any) -> TextTokenizer:
    """The tokenizer component ``spec`` names (through the run's registry); None takes the run's."""
    if spec is None:
        tokenizer = getattr(run, "state", {}).get("tokenizer")
        if tokenizer is None:
            raise SigerError(
                "this dataset needs a tokenizer: give tokenizer: PATH (a trained tokenizer.json), tiktoken or "
                "{use: NAME, ...}, or train one in an earlier step (train-tokenizer)"
            )
        return tokenizer
    from sigerlm_text.tokenizers.select import build_tokenizer

    return build_tokenizer(spec, getattr(run, "plugin_manager", None))


def resolve_seq_len(run: Any, seq_len: int | None) -> int:
    if seq_len is not None:
        return seq_len
    config = getattr(getattr(run, "resolved", None), "config", None)
    if config is None:
        raise SigerError("this dataset needs seq_len (or a model in the manifest, whose max_seq_len is used)")
    return config.max_seq_len
