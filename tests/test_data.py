"""Dataset loading: benchmark registry (offline dir), local JSONL with bad rows, errors."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from r1kit.data import BENCHMARKS, load_benchmark, load_rows, read_jsonl
from r1kit.errors import UserError


def cfg(**kw):
    base = dict(dataset_name="", dataset_split="train", dataset_config=None, prompt_column="prompt",
                answer_column="answer", max_samples=None, bad_rows="skip", seed=0)
    base.update(kw)
    return SimpleNamespace(**base)


@pytest.fixture
def offline(data_dir, monkeypatch):
    monkeypatch.setenv("R1KIT_DATA_DIR", str(data_dir))
    return data_dir


@pytest.mark.parametrize("name,split,n,first_answer", [
    ("gsm8k", "test", 1319, "18"),
    ("gsm8k", "train", 7473, "72"),
    ("math500", "test", 500, r"\left( 3, \frac{\pi}{2} \right)"),
    ("aime24", "test", 30, "204"),
    ("aime2025", "test", 30, "70"),
    ("math_train", "train", 7470, "0"),  # 4 rows have an empty answer: reported and skipped
])
def test_math_benchmarks_offline(offline, name, split, n, first_answer):
    rows = load_benchmark(name, split)
    assert len(rows) == n
    assert rows[0]["answer"] == first_answer
    assert all(r["prompt"] and r["answer"] for r in rows)


def test_benchmark_bad_rows_reported_with_line(offline, capsys):
    load_benchmark("math_train", "train")
    assert "train_answers_only.jsonl:887: empty field 'answer'" in capsys.readouterr().err
    with pytest.raises(UserError, match="4 bad row"):
        load_benchmark("math_train", "train", bad_rows="error")


def test_code_benchmarks_offline(offline):
    he = load_benchmark("humaneval", "test")
    assert len(he) == 164 and {"prompt", "test", "entry_point", "canonical_solution"} <= set(he[0])
    mbpp = load_benchmark("mbpp", "test")
    # official split: task ids 11..510 of the sanitized set
    assert len(mbpp) == 257 and all(11 <= int(r["task_id"]) <= 510 for r in mbpp)
    assert isinstance(mbpp[0]["test_list"], list)


def test_unknown_benchmark_and_split(offline):
    with pytest.raises(UserError, match="unknown benchmark 'gsm9k'"):
        load_benchmark("gsm9k")
    with pytest.raises(UserError, match="has no split 'train'"):
        load_benchmark("aime24", "train")


def test_offline_dir_lacking_files(tmp_path, monkeypatch):
    monkeypatch.setenv("R1KIT_DATA_DIR", str(tmp_path))
    with pytest.raises(UserError, match="lacks benchmark 'gsm8k'"):
        load_benchmark("gsm8k", "test")


def test_registry_has_hub_ids_for_online_use():
    for name in ("gsm8k", "math500", "aime24", "aime25", "humaneval", "mbpp"):
        assert BENCHMARKS[name].hub_id and "/" in BENCHMARKS[name].hub_id


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_rows_reported_with_file_line(tmp_path, capsys):
    f = _write(tmp_path / "d.jsonl", [
        json.dumps({"prompt": "1+1", "answer": "2"}),
        "{not json",
        json.dumps({"prompt": "2+2"}),
        json.dumps({"prompt": "3+3", "answer": ""}),
        json.dumps({"prompt": "4+4", "answer": 8}),
    ])
    rows = read_jsonl(f, required=("prompt", "answer"))
    assert [r["prompt"] for r in rows] == ["1+1", "4+4"]
    err = capsys.readouterr().err
    assert f"{f}:2: not valid JSON" in err and f"{f}:3: missing field 'answer'" in err and f"{f}:4: empty field" in err
    with pytest.raises(UserError, match=r"(?s)3 bad row\(s\).*d.jsonl:2"):
        read_jsonl(f, required=("prompt", "answer"), bad_rows="error")


def test_load_rows_local_file_and_dir_with_columns(tmp_path):
    d = tmp_path / "ds"
    d.mkdir()
    _write(d / "train.jsonl", [json.dumps({"question": f"q{i}", "final": i}) for i in range(10)])
    _write(d / "test.jsonl", [json.dumps({"question": "t", "final": 1})])
    rows = load_rows(cfg(dataset_name=str(d), prompt_column="question", answer_column="final"))
    assert len(rows) == 10 and rows[3]["prompt"] == "q3" and rows[3]["answer"] == "3"
    rows = load_rows(cfg(dataset_name=str(d / "train.jsonl"), prompt_column="question",
                         answer_column="final", max_samples=4, seed=1))
    again = load_rows(cfg(dataset_name=str(d / "train.jsonl"), prompt_column="question",
                          answer_column="final", max_samples=4, seed=1))
    assert len(rows) == 4 and rows == again
    with pytest.raises(UserError, match="missing field 'answer'"):
        load_rows(cfg(dataset_name=str(d), prompt_column="question", bad_rows="error"))


def test_local_dir_with_a_train_file_only_has_no_test_split(tmp_path):
    d = tmp_path / "ds"
    d.mkdir()
    _write(d / "train.jsonl", [json.dumps({"prompt": "q", "answer": "1"})])
    with pytest.raises(UserError, match="no test\\*.jsonl for split 'test'"):
        load_rows(cfg(dataset_name=str(d), dataset_split="test"))
    shards = tmp_path / "shards"  # unsplit shards: every file, whatever the split
    shards.mkdir()
    _write(shards / "part-0.jsonl", [json.dumps({"prompt": "q", "answer": "1"})])
    assert len(load_rows(cfg(dataset_name=str(shards), dataset_split="test"))) == 1


def test_load_rows_missing_path():
    with pytest.raises(UserError, match="does not exist"):
        load_rows(cfg(dataset_name="./no/such.jsonl"))


def test_load_rows_benchmark(offline):
    rows = load_rows(cfg(dataset_name="gsm8k", dataset_split="test", max_samples=5))
    assert len(rows) == 5 and all(r["answer"] for r in rows)
