"""sigerlm-text: Tokenizers (BPE, offline tiktoken, hybrid), the text adapter and SigerLM model, text datasets and the corpus builder, generation and chat."""
