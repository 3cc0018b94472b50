"""The installed distribution exposes its hooks module, and its hooks match the specs."""

from sigerlm_testkit import assert_imports_without_torch, check_entry_point


def test_entry_point_loads_and_matches_specs():
    pm = check_entry_point("lora", "sigerlm-lora")
    assert pm.records["lora"].module == "sigerlm_lora.hooks"
    assert pm.get_component("transforms", "lora").plugin == "lora"


def test_hooks_and_package_do_not_import_torch():
    assert_imports_without_torch("sigerlm_lora.hooks")
    assert_imports_without_torch("sigerlm_lora")
