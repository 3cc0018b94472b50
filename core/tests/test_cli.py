"""The ``siger`` command, run as a user runs it (a subprocess), with a broken plugin installed."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sigerlm_testkit import install_testkit, write_distribution

MANIFEST = textwrap.dedent(
    """\
    siger: 1
    name: cli
    data:
      train: {use: random-tokens, num_batches: 2}
    steps:
      - {use: record-calls, split: train, batches: 2}
    """
)


@pytest.fixture
def env(tmp_path):
    """An environment whose PYTHONPATH adds a broken plugin and a working one."""
    site = tmp_path / "site"
    write_distribution(
        site,
        "fake-broken",
        {"fake_broken.hooks": "raise ImportError('no module named zzz')\n"},
        {"broken": "fake_broken.hooks"},
    )
    write_distribution(
        site,
        "fake-cmd",
        {
            "fake_cmd.hooks": "from sigerlm import hookimpl\n\n@hookimpl\ndef register_commands(cli):\n    import typer\n    app = typer.Typer()\n\n    @app.command()\n    def hi(name: str):\n        print(f'hi {name}')\n\n    cli.add_typer(app, name='cmd')\n"  # noqa: E501
        },
        {"cmd": "fake_cmd.hooks"},
    )
    install_testkit(site)  # the dummy dataset and step the manifests use
    variables = {k: v for k, v in os.environ.items() if not k.startswith("SIGER_")}
    variables["PYTHONPATH"] = str(site) + os.pathsep + variables.get("PYTHONPATH", "")
    return variables


def siger(args, env, cwd=None):
    exe = Path(sys.executable).with_name("siger")
    return subprocess.run([str(exe), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_help_works_and_warns_about_the_broken_plugin(env):
    out = siger(["--help"], env)
    assert out.returncode == 0, out.stderr
    assert "run" in out.stdout and "validate" in out.stdout and "manifest-schema" in out.stdout
    assert "cmd" in out.stdout  # the working plugin's command group
    assert "plugin 'broken' failed to load: ImportError: no module named zzz" in out.stderr


def test_plugin_subcommand(env):
    out = siger(["cmd", "hi", "Lampung"], env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "hi Lampung"


def test_plugins_json_lists_the_error(env):
    out = siger(["plugins", "--json"], env)
    assert out.returncode == 0, out.stderr
    records = {r["name"]: r for r in json.loads(out.stdout)}
    assert records["broken"]["loaded"] is False
    assert "no module named zzz" in records["broken"]["error"]
    assert records["core"]["components"]["steps"] == ["train"]  # the test kit registers its dummies itself
    assert records["testkit"]["components"]["steps"] == ["record-calls"]
    assert records["cmd"]["loaded"] is True and records["cmd"]["distribution"] == "fake-cmd"
    table = siger(["plugins"], env)
    assert table.returncode == 0 and "failed" in table.stdout


def test_run_works_beside_a_broken_plugin_and_strict_mode_refuses(env, tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(MANIFEST)
    out = siger(["run", str(path), "--out-dir", str(tmp_path / "out")], env)
    assert out.returncode == 0, out.stderr
    assert "run cli finished" in out.stdout
    assert json.loads((tmp_path / "out" / "run.json").read_text())["status"] == "finished"
    again = siger(["run", str(path), "--out-dir", str(tmp_path / "out")], env)
    assert again.returncode == 1 and "holds a finished run; use --force" in again.stderr
    strict = siger(["--help"], dict(env, SIGER_STRICT_PLUGINS="1"))
    assert strict.returncode == 1 and "plugin 'broken' failed to load" in strict.stderr


def test_run_needing_the_broken_plugin_fails_before_work(env, tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(MANIFEST.replace("name: cli", "name: cli\nplugins: [broken]"))
    out = siger(["run", str(path), "--out-dir", str(tmp_path / "out")], env)
    assert out.returncode == 2
    assert f"{path}:3: plugins[0]: plugin 'broken' failed to load: ImportError: no module named zzz" in out.stderr
    assert not (tmp_path / "out").exists()


def test_validate_set_and_show(env, tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(MANIFEST)
    out = siger(["validate", str(path)], env)
    assert out.returncode == 0 and "valid (1 steps" in out.stdout
    out = siger(["validate", str(path), "--set", "steps[0].batches=1", "--show"], env)
    assert out.returncode == 0, out.stderr
    assert "batches: 1" in out.stdout and "use: testkit:record-calls" in out.stdout
    bad = siger(["validate", str(path), "--set", "steps[0].batchs=1"], env)
    assert bad.returncode == 2 and "steps[0].batchs: unknown key 'batchs' (did you mean 'batches'?)" in bad.stderr


def test_version_and_schema(env, tmp_path):
    out = siger(["--version"], env)
    assert out.returncode == 0 and out.stdout.startswith("siger (sigerlm) 0.")
    target = tmp_path / "schema.json"
    assert siger(["manifest-schema", "--out", str(target)], env).returncode == 0
    assert json.loads(target.read_text())["title"] == "SigerLM manifest"


def test_resume_and_force_together_is_refused(env, tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(MANIFEST)
    out = siger(["run", str(path), "--resume", "--force"], env, cwd=tmp_path)
    assert out.returncode == 1 and "contradict" in out.stderr
