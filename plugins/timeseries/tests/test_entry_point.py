"""The installed distribution exposes its hooks module, and its hooks match the specs."""

from sigerlm_testkit import assert_imports_without_torch, check_entry_point


def test_entry_point_loads_and_matches_specs():
    pm = check_entry_point("timeseries", "sigerlm-timeseries")
    record = pm.records["timeseries"]
    assert record.module == "sigerlm_timeseries.hooks"
    assert record.components == {
        "adapters": ["series"],
        "datasets": ["csv", "ucr"],
        "evaluators": ["series-classification", "series-forecast"],
        "steps": ["series-evaluate"],
    }


def test_hooks_module_does_not_import_torch():
    assert_imports_without_torch("sigerlm_timeseries.hooks")
    assert_imports_without_torch("sigerlm_timeseries.cli")
