"""The installed distribution exposes its hooks module, and its hooks match the specs."""

import subprocess
import sys

from sigerlm_testkit import assert_imports_without_torch, check_entry_point


def test_entry_point_loads_and_matches_specs():
    pm = check_entry_point("serving", "sigerlm-serving")
    assert pm.records["serving"].module == "sigerlm_serving.hooks"


def test_hooks_module_does_not_import_torch():
    assert_imports_without_torch("sigerlm_serving.hooks")


def test_hooks_and_commands_stay_light():
    """Importing the hooks and building `siger`'s commands import neither fastapi, uvicorn nor torch."""
    code = (
        "import sys\n"
        "from sigerlm.plugins import make_plugin_manager\n"
        "from sigerlm_testkit import add_plugin\n"
        "from sigerlm.cli import build_app\n"
        "import sigerlm_serving.hooks as hooks\n"
        "pm = make_plugin_manager(load='none')\n"
        "add_plugin(pm, hooks, 'serving')\n"
        "build_app(pm)\n"
        "heavy = [m for m in ('fastapi', 'uvicorn', 'starlette', 'torch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
