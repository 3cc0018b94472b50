pytest_plugins = ["sigerlm.testing"]
