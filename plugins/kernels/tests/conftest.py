pytest_plugins = ["sigerlm_testkit"]
