"""No plugin's hooks module imports torch (``siger --help`` must stay fast)."""

import pytest

from sigerlm.plugins import installed_entry_points
from sigerlm_testkit import assert_imports_without_torch

PLUGINS = sorted(installed_entry_points().items())


def test_first_party_plugins_are_installed():
    assert {"text", "moe", "lampung", "serving"} <= {name for name, _ in PLUGINS}


@pytest.mark.parametrize("name, ep", PLUGINS, ids=[n for n, _ in PLUGINS])
def test_hooks_module_is_light(name, ep):
    assert_imports_without_torch(ep.value)
