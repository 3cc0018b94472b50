"""Tokenizers of sigerlm-text: a trainable ByteLevel BPE, the offline tiktoken fallback, and
the hybrid selector. Every tokenizer has the same special tokens at fixed ids and a hash that
saved models record."""

from sigerlm_text.tokenizers.base import SPECIAL_TOKENS, TextTokenizer, TokenizerError

__all__ = ["SPECIAL_TOKENS", "TextTokenizer", "TokenizerError"]
