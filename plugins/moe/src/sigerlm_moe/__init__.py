"""sigerlm-moe: a sparse mixture-of-experts branch for SigerLM blocks.

With load-balancing losses and dense-to-MoE warm start.
"""
