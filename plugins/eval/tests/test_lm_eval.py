"""The lm-evaluation-harness bridge: one local multiple-choice task through lm_eval gives the
accuracy siger eval gives on the same items (offline: a local JSON dataset)."""

import pytest

ROWS = [
    {"context": "Jalan menjadi basah karena", "choices": ["hujan turun deras", "bulan bersinar"], "label": 0},
    {"context": "Saya lapar, jadi saya", "choices": ["tidur", "makan nasi"], "label": 1},
    {"context": "Adik menangis karena", "choices": ["mainannya rusak", "ia mendapat hadiah"], "label": 0},
    {"context": "Listrik padam, jadi warga menyalakan", "choices": ["lilin", "televisi"], "label": 0},
]

TASK = """task: copa_id_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
  - metric: acc_norm
"""


@pytest.mark.slow
def test_lm_eval_accuracy_equals_siger_eval(model_dir, eval_pm, tmp_path, monkeypatch, write_jsonl):
    pytest.importorskip("lm_eval", reason="the lm-eval extra is not installed")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    import lm_eval
    from lm_eval.tasks import TaskManager

    import sigerlm_eval.lm_eval_model  # noqa: F401  (registers the model "sigerlm")
    from sigerlm_eval.task import eval_models

    data = write_jsonl(tmp_path / "items.jsonl", ROWS)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "copa_id_local.yaml").write_text(TASK.format(data=data), encoding="utf-8")
    out = lm_eval.simple_evaluate(
        model="sigerlm",
        model_args=f"path={model_dir}",
        tasks=["copa_id_local"],
        task_manager=TaskManager(include_path=str(tasks)),
        batch_size=2,
    )
    got = out["results"]["copa_id_local"]
    (task := tmp_path / "task.yaml").write_text(
        f"evaluators:\n  - {{use: multiple-choice, name: mc, files: ['{data}']}}\n", encoding="utf-8"
    )
    ours = eval_models([model_dir], task, tmp_path / "o", eval_pm)["results"][str(model_dir)]["mc"]
    assert got["acc,none"] == pytest.approx(ours["acc"])
    assert got["acc_norm,none"] == pytest.approx(ours["acc_norm"])
