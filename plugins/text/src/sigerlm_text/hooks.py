"""Hook implementations of sigerlm-text (entry point ``text``).

Keep this module light: it is imported by every ``siger`` call. Tokenizers, the text adapter,
datasets and generation register here as they land; their modules import torch and
tokenizers inside the factories.
"""
