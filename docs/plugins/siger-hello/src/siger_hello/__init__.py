"""siger-hello: an example SigerLM plugin."""
