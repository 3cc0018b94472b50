"""The installed distribution exposes its hooks module, and its hooks match the specs."""

import subprocess
import sys

from sigerlm.testing import check_entry_point


def test_entry_point_loads_and_matches_specs():
    pm = check_entry_point("lampung", "sigerlm-lampung")
    assert pm.records["lampung"].module == "sigerlm_lampung.hooks"


def test_hooks_module_does_not_import_torch():
    code = "import sys, sigerlm_lampung.hooks; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
