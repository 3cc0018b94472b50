"""The installed distribution exposes its hooks module, and its hooks match the specs."""

from sigerlm_testkit import assert_imports_without_torch, check_entry_point


def test_entry_point_loads_and_matches_specs():
    pm = check_entry_point("onnx", "sigerlm-onnx")
    assert pm.records["onnx"].module == "sigerlm_onnx.hooks"
    assert pm.get_component("exporters", "onnx").plugin == "onnx"
    assert pm.get_component("runtimes", "onnxruntime").plugin == "onnx"
    assert pm.get_component("steps", "onnx-export").plugin == "onnx"


def test_hooks_and_package_do_not_import_torch():
    assert_imports_without_torch("sigerlm_onnx.hooks")
    assert_imports_without_torch("sigerlm_onnx")
