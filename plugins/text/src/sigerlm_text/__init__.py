"""sigerlm-text: tokenizers, the text adapter and model, datasets, generation and chat.

Tokenizers (BPE, offline tiktoken, hybrid), the text adapter and SigerLM model, text datasets and
the corpus builder, generation and chat.
"""
