"""The docs cover every hook, and the code they show is the code that runs."""

import inspect
import re
from pathlib import Path

import pluggy
import pytest

from sigerlm.plugins import make_plugin_manager

ROOT = Path(__file__).resolve().parents[1]


def hook_signatures():
    pm = make_plugin_manager(load="all")
    out = {}
    for name, caller in vars(pm.hook).items():
        if isinstance(caller, pluggy.HookCaller) and caller.spec is not None:
            sig = inspect.signature(caller.spec.function)
            params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values() if p.name != "self")
            out[name] = f"{name}({params}) -> {sig.return_annotation}"
    return out


def test_every_hook_has_a_heading_with_its_exact_signature():
    text = (ROOT / "docs" / "plugin-hooks.md").read_text()
    headings = set(re.findall(r"^#+ `(.+)`\s*$", text, flags=re.M))
    signatures = hook_signatures()
    assert "register_routes" in signatures  # added by sigerlm-serving
    missing = [sig for sig in signatures.values() if sig not in headings]
    assert not missing, f"docs/plugin-hooks.md lacks headings for: {missing}"
    stale = [h for h in headings if h.split("(")[0] not in signatures]
    assert not stale, f"docs/plugin-hooks.md documents hooks that do not exist: {stale}"


INCLUDE = re.compile(r"<!-- include: (?P<path>\S+) -->\n```\w*\n(?P<body>.*?)```", re.S)


@pytest.mark.parametrize("doc", ["writing-plugins.md"])
def test_included_code_matches_the_files(doc):
    text = (ROOT / "docs" / doc).read_text()
    blocks = list(INCLUDE.finditer(text))
    assert blocks, f"docs/{doc} includes no files"
    for match in blocks:
        source = (ROOT / match["path"]).read_text()
        assert match["body"] == source, f"docs/{doc}: the copy of {match['path']} is stale"
