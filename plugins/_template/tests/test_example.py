from sigerlm_example import hooks

from sigerlm_testkit import add_plugin


def test_example_step_runs_in_a_manifest(plugin_manager, run_manifest):
    add_plugin(plugin_manager, hooks, "example")
    result = run_manifest({"siger": 1, "name": "t", "steps": [{"use": "example-step", "message": "hi"}]})
    assert result.results["steps"][0]["results"] == {"message_length": 2}
