"""The installed distribution registers ``scan: fused`` and adds ``siger kernels``; its hooks
module stays light."""

import json
import subprocess
import sys

from sigerlm.model.config import scan_backends
from sigerlm_testkit import assert_imports_without_torch, check_entry_point


def test_entry_point_loads_and_matches_specs():
    pm = check_entry_point("kernels", "sigerlm-kernels")
    assert pm.records["kernels"].module == "sigerlm_kernels.hooks"
    assert scan_backends()["fused"] == "sigerlm_kernels.backend:FUSED"


def test_hooks_module_does_not_import_torch():
    assert_imports_without_torch("sigerlm_kernels.hooks")


def test_an_installed_sigerlm_kernels_is_found_without_loading_anything():
    """A process that imported nothing of sigerlm-kernels and loaded no plugin builds a default
    model with it (the entry point ``sigerlm.scans``), importing the back-end only then."""
    code = (
        "import sys\n"
        "from sigerlm.model.backbone import Backbone\n"
        "from sigerlm.model.config import SigerConfig\n"
        "config = SigerConfig.from_profile('tiny')\n"
        "print('sigerlm_kernels' in sys.modules)\n"
        "print(type(Backbone(config).layers[0].kernels).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "FusedKernels"]


def test_siger_kernels_build_and_info():
    siger = [sys.executable, "-m", "sigerlm.cli"]
    built = json.loads(subprocess.run([*siger, "kernels", "build"], capture_output=True, text=True, check=True).stdout)
    assert built["name"].startswith("sigerlm_kernels_") and "threads" in built["vectorised_for"]
    info = json.loads(subprocess.run([*siger, "kernels", "info"], capture_output=True, text=True, check=True).stdout)
    assert info["built"] is True and info["folder"] == built["folder"]
