"""The evaluate step, task files, siger eval (side-by-side table, eval.json, eval.md) and errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

from sigerlm import hookimpl
from sigerlm_eval.task import EvalTaskError, eval_models, load_task


class ForeignOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scale: float = 1.0


class Foreign:
    """A plugin of another modality registering an evaluator with the same contract."""

    calls = []

    @hookimpl
    def register_evaluators(self, register):
        def factory(run, options):
            from sigerlm.assemble import current_model

            model = current_model(run)
            Foreign.calls.append((run, options))
            return {"params": options.scale * sum(p.numel() for p in model.parameters()), "label": "not a number"}

        register("foreign-score", factory, options=ForeignOptions)


def task_file(tmp_path, evaluators, write=None):
    import yaml

    path = tmp_path / "task.yaml"
    path.write_text(write or yaml.safe_dump({"name": "t", "evaluators": evaluators}), encoding="utf-8")
    return path


@pytest.fixture
def copa(tmp_path, write_jsonl):
    rows = [
        {
            "premise": "Jalan basah.",
            "question": "cause",
            "choice1": "Hujan turun.",
            "choice2": "Ada bulan.",
            "label": 0,
        },
        {
            "premise": "Saya lapar.",
            "question": "effect",
            "choice1": "Saya tidur.",
            "choice2": "Saya makan.",
            "label": 1,
        },
    ]
    return write_jsonl(tmp_path / "copa.jsonl", rows)


def test_eval_models_side_by_side(model_dir, eval_pm, tmp_path, copa):
    from sigerlm_testkit import add_plugin

    add_plugin(eval_pm, Foreign(), "foreign")
    task = task_file(
        tmp_path,
        [
            {"use": "multiple-choice", "name": "copa", "template": "copa", "files": ["${here}/copa.jsonl"]},
            {"use": "foreign-score", "scale": 2.0},
        ],
    )
    report = eval_models([model_dir, model_dir], task, tmp_path / "out", eval_pm)
    labels = list(report["results"])
    assert labels == [f"{model_dir}#1", f"{model_dir}#2"]
    first = report["results"][labels[0]]
    assert first["copa"]["n"] == 2 and "label" not in first["foreign-score"]
    run, options = Foreign.calls[-1]
    assert options.scale == 2.0 and run.state["model"] is not None
    assert first["foreign-score"]["params"] == 2.0 * sum(p.numel() for p in run.state["model"].parameters())
    saved = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert saved["results"][labels[0]]["copa"]["acc"] == first["copa"]["acc"]
    md = (tmp_path / "out" / "eval.md").read_text()
    assert (
        md.startswith("# t\n")
        and f"| evaluator | metric | {labels[0]} | {labels[1]} |" in md
        and "| copa | acc |" in md
    )
    assert (tmp_path / "out" / "details").is_dir()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("evaluators: [", r"task.yaml:\d+: not valid YAML"),
        ("name: x\n", r"task.yaml: a task file is a mapping with a non-empty list"),
        ("evaluators: [perplexity]\nsteps: []\n", r"task.yaml: unknown keys \['steps'\]"),
        (
            "evaluators:\n  - {use: perplexity, files: [a.txt]}\n  - {use: nope}\n",
            r"task.yaml:3: evaluators\[1\]: .*nope",
        ),
        (
            "evaluators:\n  - {use: multiple-choice, files: [x.jsonl], templte: copa}\n",
            r"task.yaml:2: evaluators\[0\] \(multiple-choice\): templte: Extra inputs",
        ),
        (
            "evaluators:\n\n  - {use: perplexity, files: [missing.txt]}\n",
            r"task.yaml:3: evaluators\[0\] \(perplexity\): files\[0\]: missing.txt: file or folder not found",
        ),
        ("evaluators:\n  - {use: perplexity, files: ['${nope}/a']}\n", r"unknown \$\{nope\}"),
    ],
)
def test_malformed_task_files(tmp_path, eval_pm, model_dir, text, message):
    task = task_file(tmp_path, None, text)
    with pytest.raises(EvalTaskError, match=message):
        eval_models([model_dir], task, tmp_path / "out", eval_pm)


def test_bad_data_row_is_named(tmp_path, eval_pm, model_dir, write_jsonl):
    from sigerlm_eval.common import EvalDataError

    data = write_jsonl(tmp_path / "mc.jsonl", [{"context": "a", "choices": ["b", "c"], "label": 0}, {"context": "a"}])
    task = task_file(tmp_path, [{"use": "multiple-choice", "files": [str(data)]}])
    with pytest.raises(EvalDataError, match=rf"{data}:2: 'choices' must be a list"):
        eval_models([model_dir], task, tmp_path / "out", eval_pm)


def test_load_task_fills_here_and_data(tmp_path, monkeypatch):
    monkeypatch.setenv("SIGER_DATA_DIR", str(tmp_path))
    task = task_file(tmp_path, [{"use": "perplexity", "files": ["${here}/a.txt", "${data}/b.txt"]}])
    name, specs, lines = load_task(task)
    assert name == "t" and specs[0]["files"] == [str(tmp_path.resolve() / "a.txt"), f"{tmp_path}/b.txt"]


def test_evaluate_step_in_a_manifest(model_dir, run_manifest, eval_pm, tmp_path, copa):
    manifest = {
        "siger": 1,
        "name": "ev",
        "plugins": ["text", "eval"],
        "model": {"init_from": str(model_dir)},
        "steps": [
            {
                "use": "evaluate",
                "evaluators": [
                    {"use": "multiple-choice", "template": "copa", "files": [str(copa)]},
                    {"use": "perplexity", "files": [str(copa.parent / "copa.jsonl")], "field": "premise"},
                ],
            }
        ],
    }
    result = run_manifest(manifest, out_dir=tmp_path / "run")
    assert result.status == "finished"
    step = result.results["steps"][0]["results"]
    assert step["multiple-choice"]["n"] == 2 and step["perplexity"]["documents"] == 2
    assert "| multiple-choice | acc |" in (tmp_path / "run" / "eval.md").read_text()
    assert (tmp_path / "run" / "eval.details" / "multiple-choice.jsonl").is_file()


def test_evaluate_step_validates_evaluators_before_running(model_dir, run_manifest, eval_pm, tmp_path):
    manifest = {
        "siger": 1,
        "name": "ev",
        "plugins": ["text", "eval"],
        "model": {"init_from": str(model_dir)},
        "steps": [{"use": "evaluate", "evaluators": [{"use": "perplexity"}]}],
    }
    with pytest.raises(
        EvalTaskError, match=r"evaluate step: evaluators\[0\] \(perplexity\): .*give either files or dataset"
    ):
        run_manifest(manifest, out_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "eval.json").exists()


def test_siger_eval_command(model_dir, tmp_path, copa):
    task = task_file(tmp_path, [{"use": "multiple-choice", "name": "copa", "template": "copa", "files": [str(copa)]}])
    env = {**os.environ, "SIGER_LOAD_PLUGINS": "text,eval", "OMP_NUM_THREADS": "1"}
    siger = Path(sys.executable).with_name("siger")
    done = subprocess.run(
        [str(siger), "eval", str(model_dir), "--task", str(task), "--out", str(tmp_path / "o"), "--threads", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "copa" in done.stdout and "acc_norm" in done.stdout
    assert json.loads((tmp_path / "o" / "eval.json").read_text())["results"][str(model_dir)]["copa"]["n"] == 2
    bad = task_file(tmp_path, None, "evaluators:\n  - {use: multiple-choice}\n")
    done = subprocess.run(
        [str(siger), "eval", str(model_dir), "--task", str(bad)], capture_output=True, text=True, env=env, timeout=300
    )
    assert (
        done.returncode != 0
        and "task.yaml:2: evaluators[0] (multiple-choice): files: Field required" in done.stdout + done.stderr
    )
