"""``siger export NAME MODEL_DIR --out PATH [--OPTION VALUE ...]``: one command for every
registered exporter, its options parsed into the exporter's pydantic model."""

import json
import logging
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field
from typer.testing import CliRunner

from sigerlm import hookimpl
from sigerlm.assemble import build_model
from sigerlm.cli import build_app
from sigerlm.errors import SigerError
from sigerlm.model.config import SigerConfig
from sigerlm_testkit import add_plugin, kit_plugin_manager


class DumpOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    level: int = Field(1, ge=0, le=9, description="How hard to try.")
    mode: Literal["fast", "small"] = "fast"
    shout: bool = Field(False, description="Say it loudly.")
    keep_state: bool = True


class Dumper:
    """An exporter that records what it was given."""

    @hookimpl
    def register_exporters(self, register):
        register("dump", self.dump, options=DumpOptions, description="Write the options as JSON.")

    @staticmethod
    def dump(model, out_dir, options):
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / "dump.json"
        path.write_text(json.dumps({"layers": model.config.n_layers, **options.model_dump()}))
        return path


@pytest.fixture
def cli(tmp_path):
    pm = kit_plugin_manager()
    add_plugin(pm, Dumper(), "dumper")
    config = SigerConfig.from_profile("tiny", d_model=8, n_layers=2, block="identity")
    build_model(pm, config, {"use": "random-embedding", "vocab_size": 16}).save(tmp_path / "model")
    app = build_app(pm)

    def invoke(*args):
        return CliRunner().invoke(app, ["export", *[str(a) for a in args]])

    yield invoke, tmp_path
    logger = logging.getLogger("sigerlm")  # the command's log handler wrote to the runner's stream
    logger.handlers = [h for h in logger.handlers if not getattr(h, "_siger_cli", False)]


def test_options_become_the_exporters_pydantic_options(cli):
    invoke, tmp = cli
    result = invoke(
        "dump", tmp / "model", "--out", tmp / "a", "--level", "7", "--mode=small", "--shout", "--no-keep-state"
    )
    assert result.exit_code == 0, result.output
    assert f"exported {tmp / 'model'} -> {tmp / 'a' / 'dump.json'} (dumper:dump)" in result.output
    dumped = json.loads((tmp / "a" / "dump.json").read_text())
    assert dumped == {"layers": 2, "level": 7, "mode": "small", "shout": True, "keep_state": False}
    # options may come before the model folder too; defaults fill the rest
    assert invoke("dump", "--out", tmp / "b", "--level", "3", tmp / "model").exit_code == 0
    assert json.loads((tmp / "b" / "dump.json").read_text())["level"] == 3


def test_help_lists_exporters_and_each_exporters_options(cli):
    invoke, tmp = cli
    listing = invoke("--help")
    assert listing.exit_code == 0
    assert "dump" in listing.output and "Write the options as JSON. (dumper)" in listing.output
    options = invoke("dump", "--help")
    assert options.exit_code == 0
    lines = options.output.splitlines()
    assert lines[0] == "siger export dump MODEL_DIR --out PATH [--force]: Write the options as JSON."
    assert any(line.split() == ["--level", "int", "(default", "1)", "How", "hard", "to", "try."] for line in lines)
    assert any(line.startswith("  --mode") and "Literal['fast', 'small']" in line for line in lines)
    assert any(line.startswith("  --keep-state") and "bool (default True)" in line for line in lines)
    assert invoke().exit_code == 2  # no exporter named: the list, and a usage error


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--levle", "3"], "exporter 'dump' has no option --levle; did you mean --level?"),
        (["--level", "12"], "exporter 'dump': --level: Input should be less than or equal to 9"),
        (["--mode", "huge"], "exporter 'dump': --mode: Input should be 'fast' or 'small'"),
        (["--level"], "exporter 'dump': --level needs a value"),
    ],
)
def test_bad_options_are_one_line_errors_naming_option_and_exporter(cli, args, message):
    invoke, tmp = cli
    result = invoke("dump", tmp / "model", "--out", tmp / "c", *args)
    assert isinstance(result.exception, SigerError)
    assert str(result.exception) == message
    assert not (tmp / "c").exists()


def test_unknown_exporter_missing_out_and_occupied_out(cli):
    invoke, tmp = cli
    assert "unknown exporter 'dumb'; did you mean 'dump'?" in str(invoke("dumb", tmp / "model").exception)
    assert "usage: siger export dump MODEL_DIR --out PATH" in str(invoke("dump", tmp / "model").exception)
    (tmp / "full").mkdir()
    (tmp / "full" / "x").write_text("keep")
    occupied = invoke("dump", tmp / "model", "--out", tmp / "full")
    assert "--out:" in str(occupied.exception) and "add --force" in str(occupied.exception)
    assert invoke("dump", tmp / "model", "--out", tmp / "full", "--force").exit_code == 0
    assert (tmp / "full" / "x").read_text() == "keep" and (tmp / "full" / "dump.json").is_file()
