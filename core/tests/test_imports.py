"""Importing the core (and running ``siger --help``) must not import torch."""

import subprocess
import sys

import pytest

from sigerlm_testkit import assert_imports_without_torch


@pytest.mark.parametrize(
    "module",
    [
        "sigerlm",
        "sigerlm.plugins",
        "sigerlm.manifest",
        "sigerlm.run",
        "sigerlm.cli",
        "sigerlm.builtins",
        "sigerlm.model",
        "sigerlm_testkit",
    ],
)
def test_module_does_not_import_torch(module):
    assert_imports_without_torch(module)


def test_building_the_cli_with_every_plugin_does_not_import_torch():
    code = (
        "import sys\n"
        "from sigerlm.cli import build_app\n"
        "from sigerlm.plugins import make_plugin_manager\n"
        "pm = make_plugin_manager()\n"
        "build_app(pm)\n"
        "pm.components\n"
        "assert 'torch' not in sys.modules, 'torch imported while building the CLI'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
