"""The installed distribution registers ``scan: fused`` and adds ``siger kernels``; its hooks
module stays light."""

import json
import subprocess
import sys

from sigerlm.model.config import SCAN_BACKENDS
from sigerlm_testkit import assert_imports_without_torch, check_entry_point


def test_entry_point_loads_and_matches_specs():
    pm = check_entry_point("kernels", "sigerlm-kernels")
    assert pm.records["kernels"].module == "sigerlm_kernels.hooks"
    assert SCAN_BACKENDS["fused"] == "sigerlm_kernels.backend:FUSED"


def test_hooks_module_does_not_import_torch():
    assert_imports_without_torch("sigerlm_kernels.hooks")


def test_loading_the_plugins_is_what_makes_fused_available():
    """A process that loads the plugins (as ``siger`` does) can build a default model; one that
    has not is told where ``fused`` comes from."""
    code = (
        "from sigerlm.model.backbone import Backbone\n"
        "from sigerlm.model.config import SigerConfig\n"
        "from sigerlm.model.scan import ScanBackendError\n"
        "try:\n"
        "    Backbone(SigerConfig.from_profile('tiny'))\n"
        "except ScanBackendError as exc:\n"
        "    print('error:', exc)\n"
        "from sigerlm.plugins import make_plugin_manager\n"
        "make_plugin_manager(load=['kernels'])\n"
        "print(type(Backbone(SigerConfig.from_profile('tiny')).layers[0].kernels).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    error, built = out.strip().splitlines()
    assert "unknown scan back-end 'fused'; back-ends: reference, chunked" in error
    assert "sigerlm-kernels registers it" in error
    assert built == "FusedKernels"


def test_siger_kernels_build_and_info():
    siger = [sys.executable, "-m", "sigerlm.cli"]
    built = json.loads(subprocess.run([*siger, "kernels", "build"], capture_output=True, text=True, check=True).stdout)
    assert built["name"].startswith("sigerlm_kernels_") and "threads" in built["vectorised_for"]
    info = json.loads(subprocess.run([*siger, "kernels", "info"], capture_output=True, text=True, check=True).stdout)
    assert info["built"] is True and info["folder"] == built["folder"]
