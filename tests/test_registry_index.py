"""registry/plugins.toml agrees with the distributions and what their plugins register."""

from importlib import metadata
from pathlib import Path

import tomllib

from sigerlm.cli import build_app
from sigerlm.plugins import make_plugin_manager

ROOT = Path(__file__).resolve().parents[1]
INDEX = tomllib.loads((ROOT / "registry" / "plugins.toml").read_text())["plugin"]


def test_every_plugin_folder_is_indexed():
    folders = {f"plugins/{p.name}" for p in (ROOT / "plugins").iterdir() if p.is_dir() and not p.name.startswith("_")}
    indexed = {entry["path"] for entry in INDEX}
    assert folders <= indexed, f"not in registry/plugins.toml: {folders - indexed}"
    workspace = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["sigerlm"]["workspace"]["members"]
    assert set(workspace) == indexed


def test_index_matches_packaging_and_components():
    pm = make_plugin_manager(load="all")
    for entry in INDEX:
        project = tomllib.loads((ROOT / entry["path"] / "pyproject.toml").read_text())["project"]
        assert project["name"] == entry["distribution"]
        record = pm.records[entry["name"]]
        assert record.loaded, record.error
        assert record.distribution == entry["distribution"]
        assert record.module == entry["entry_point"]
        if entry["name"] != "core":
            assert project["entry-points"]["sigerlm"] == {entry["name"]: entry["entry_point"]}
            assert metadata.version(entry["distribution"]) == project["version"]
        assert record.components == entry["provides"], entry["name"]


def test_index_lists_the_commands_each_plugin_adds():
    import typer.main

    pm = make_plugin_manager(load="all")
    commands = set(typer.main.get_command(build_app(pm)).commands)
    listed = {c for entry in INDEX for c in entry.get("commands", [])}
    assert commands == listed
