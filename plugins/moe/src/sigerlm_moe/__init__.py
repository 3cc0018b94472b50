"""sigerlm-moe: A sparse mixture-of-experts branch for SigerLM blocks, with load-balancing losses and dense-to-MoE warm start."""
