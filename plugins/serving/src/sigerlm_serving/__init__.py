"""sigerlm-serving: the SigerLM HTTP server.

`siger serve`, the /v1 API with streaming, sessions and the web page. Adds the `register_routes` hook.
"""
