import json

import pytest

from sigerlm.errors import SigerError
from sigerlm.paths import data_dir
from sigerlm_lampung.data import check_pair_file, check_pair_files


def test_shared_splits_have_the_documented_row_counts():
    reports = {r.path: r for r in check_pair_files(data_dir() / "lampung")}
    assert reports["splits/train.jsonl"].rows == 4323
    assert reports["splits/valid.jsonl"].rows == 512
    assert reports["splits/train.jsonl"].with_english == 1604
    assert reports["splits/train.jsonl"].flags["misaligned_turns"] == 68
    assert "sources/meizano_lampung_dictionary.jsonl" not in reports  # own schema
    assert all(not r.problems for r in reports.values())


def test_broken_lines_are_reported_with_their_number(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [
        json.dumps({"lampung": "Nyak haga mengan", "indonesian": "saya mau makan", "source": "t"}),
        "{not json",
        json.dumps({"lampung": "", "indonesian": "kosong"}),
        json.dumps(["a", "list"]),
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    report = check_pair_file(path)
    assert report.rows == 1
    assert report.sources == {"t": 1}
    assert report.problems[0].startswith("line 2: not valid JSON")
    assert report.problems[1] == "line 3: missing lampung"
    assert report.problems[2] == "line 4: not an object"


def test_a_folder_without_pair_files_is_a_clear_error(tmp_path):
    with pytest.raises(SigerError, match="no Lampung pair files"):
        check_pair_files(tmp_path)
