"""`siger serve` refuses bad arguments with clear messages before starting anything."""

import pytest
from typer.testing import CliRunner


@pytest.fixture
def app(plugin_manager):
    from sigerlm.cli import build_app
    from sigerlm.testing import add_plugin

    from sigerlm_serving import hooks

    add_plugin(plugin_manager, hooks, "serving")
    return build_app(plugin_manager)


@pytest.mark.parametrize("args, message", [
    (["serve", "{missing}"], "is not a model folder"),
    (["serve", "{model}", "--adapter", "no-equals-sign"], "expected NAME=PATH"),
    (["serving", "export-intake", "--out", "x.jsonl", "--db", "{missing}"], "does not exist"),
])
def test_bad_arguments(app, model_dir, tmp_path, args, message):
    args = [a.format(missing=tmp_path / "nothing", model=model_dir) for a in args]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "400", "NO_COLOR": "1"})
    assert result.exit_code != 0
    assert message in " ".join(result.output.replace("│", " ").split())
