"""sigerlm-example: replace this line with what the plugin adds."""
