"""Evaluation: metrics against brute force, score-only files end to end, benchmark gold answers.

Gold answers scored as predictions must give 100%; other items' answers (of a different value) at most
1%; HumanEval's canonical solutions 164/164 and MBPP's reference programs >= 99% in the sandbox.
"""

from __future__ import annotations

import collections
import itertools
import json
import math
import random
import re
import statistics

import pytest

from evals.evaluate import main as eval_main
from evals.metrics import maj_at_k, mean_and_stderr, pass_at_k, summarize
from evals.tasks import get_task, load_task_rows
from r1kit.errors import UserError
from rewards.judge import score_code, score_math, vote_key

# ------------------------------------------------------------------------------------ metrics


def brute_pass_at_k(correct: list[bool], k: int) -> float:
    """Share of all k-subsets of the samples that hold at least one correct sample."""
    subsets = list(itertools.combinations(correct, k))
    return sum(any(s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n,c,k", [(n, c, k) for n in range(1, 7) for c in range(n + 1) for k in range(1, n + 1)])
def test_pass_at_k_equals_enumeration(n, c, k):
    correct = [True] * c + [False] * (n - c)
    assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(correct, k), abs=1e-12)


def test_pass_at_k_averages_items_and_is_not_the_naive_estimate():
    items = [{"correct": [True, False, False, False]}, {"correct": [True, True, False, False]}]
    m = summarize(items, ks=[1, 2])
    assert m["pass@2"] == pytest.approx((brute_pass_at_k(items[0]["correct"], 2) + brute_pass_at_k(items[1]["correct"], 2)) / 2)
    assert m["pass@2"] == pytest.approx((0.5 + 5 / 6) / 2)  # naive 1-(1-p)^k would give (0.4375 + 0.75) / 2
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)


@pytest.mark.parametrize("keys,k,gold,expected", [
    (["5", "5", "3", "4"], 4, "5", 1.0),            # plain majority
    (["3", "5", "5", "3"], 4, "3", 1.0),            # tie: the answer seen first wins
    (["3", "5", "5", "3"], 4, "5", 0.0),
    ([None, None, "5", None], 4, "5", 0.0),         # "no answer" is a bucket: it wins here and is never correct
    ([None, "5", "5", None], 4, "5", 0.0),          # ... and wins its ties when seen first
    (["5", None, None, "5"], 4, "5", 1.0),
    ([None, "5", "5"], 3, "5", 1.0),
    ([None, None, None, None], 4, "5", 0.0),
    (["5", "3", "3", "3", "5", "5"], 2, "5", 2 / 3),  # groups [5,3] [3,3] [5,5]
    (["5", "3", "3"], 2, "5", 1.0),                 # one full group; the leftover sample is not used
])
def test_maj_at_k_planted_votes(keys, k, gold, expected):
    assert maj_at_k(keys, k, lambda key: key == gold) == pytest.approx(expected)


def T(answer: str) -> str:
    return f"<think>work</think><answer>{answer}</answer>"


def score_answers(gold: str, answers: list[str], **options) -> tuple[dict, dict]:
    items = score_math([{"id": "a", "answer": gold}], [[T(a) for a in answers]], answer_format="answer_tag", **options)
    return items[0], summarize(items, ks=[1, len(answers)])


@pytest.mark.parametrize("gold,answers,keys,pass1,maj", [
    # The reviewer's cases: the majority "3" is not the solution set, and scores 0 as an answer to `2, 3`.
    ("2, 3", ["x = 2 or x = 3", "3", "3"], ["2,3", None, None], 1 / 3, 0.0),
    ("2, 3", ["x = 2 or x = 3", "3, 2", "5"], ["2,3", "2,3", None], 2 / 3, 1.0),  # an unordered list by its sorted items
    ("6", ["\uff16", "6", "\uff16"], [None, "6", None], 1 / 3, 0.0),  # look-alike digits vote for nothing
    ("6", ["6", "\uff16", "\uff16"], ["6", None, None], 1 / 3, 0.0),
    ("46", ["66 - 20", "66 - 20", "46"], [None, None, "46"], 1 / 3, 0.0),  # not in final form
    ("5", ["x = 2+3 = 5", "5", "4"], ["5", "5", "4"], 2 / 3, 1.0),  # the chain's last term, as scored
    ("1/2", ["0.5", "7", "\\frac{1}{2}", "7", "\\dfrac12"], ["1/2", "7", "1/2", "7", "1/2"], 0.6, 1.0),
    # `0.33` is right for 1/3 as a rounding, `33/100` is not: two keys, each with its own verdict.
    ("1/3", ["0.33", "33/100", "33/100", "0.33", "0.33"], ["0.33", "33/100", "33/100", "0.33", "0.33"], 0.6, 1.0),
    ("1/3", ["33/100", "0.33", "33/100"], ["33/100", "0.33", "33/100"], 1 / 3, 0.0),
])  # fmt: skip
def test_maj_votes_on_the_answer_that_was_scored(gold, answers, keys, pass1, maj):
    item, m = score_answers(gold, answers)
    assert item["vote_keys"] == keys
    assert m["pass@1"] == pytest.approx(pass1) and m[f"maj@{len(answers)}"] == pytest.approx(maj)
    # Without a tie at the top the vote does not depend on the samples' order.
    counts = sorted(collections.Counter(keys).values(), reverse=True)
    if len(counts) == 1 or counts[0] > counts[1]:
        for order in set(itertools.permutations(answers)):
            assert score_answers(gold, list(order))[1][f"maj@{len(answers)}"] == pytest.approx(maj), order


_POOLS = {
    "6": ["6", "\uff16", "6.0", "12/2", "x = 6", "2+4", "7", "\\frac{12}{2}", "6 or 7", "x = 2+4 = 6", "", "six"],
    "1/3": ["0.33", "0.333", "0.3", "1/3", "\\frac13", "33/100", "2/6", "0.34", "x = 1/3"],
    "2, 3": ["x = 2 or x = 3", "3, 2", "2", "3", "2, 3, 4", "x=3 \\text{ or } x=2", "\\{2, 3\\}"],
    "\\frac{\\pi}{2}": ["\\pi/2", "\\frac{\\pi}{2}", "1.57", "90", "\\dfrac\\pi2", "\\pi"],
}


@pytest.mark.parametrize("strict", [True, False])
def test_every_key_has_the_verdict_of_its_samples_and_maj_at_1_is_pass_at_1(strict):
    # Invariants on random draws: each vote key's verdict is the verdict of every sample voting for it,
    # so maj@1 (each sample its own majority) equals pass@1, whatever was drawn and in whatever order.
    rng = random.Random(0)
    rows, completions = [], []
    for i in range(40):
        gold = rng.choice(list(_POOLS))
        rows.append({"id": str(i), "answer": gold})
        picks = [rng.choice(_POOLS[gold]) for _ in range(6)]
        completions.append([T(a) if rng.random() < 0.8 else f"<answer>{a}</answer>" for a in picks])
    items = score_math(rows, completions, answer_format="answer_tag", strict=strict)
    for item in items:
        for key, ok in zip(item["vote_keys"], item["correct"]):
            assert key is None and not ok or key is not None and item["key_correct"][key] == ok, (item["gold"], key)
    m = summarize(items, ks=[1, 6])
    assert m["maj@1"] == pytest.approx(m["pass@1"]) and 0 < m["maj@6"] < 1


def test_maj_at_k_votes_on_normalized_answers():
    answers = ["0.5", "7", r"\frac{1}{2}", "7", r"\dfrac12"]
    items = score_math([{"id": "a", "answer": "1/2"}], [[f"<think>t</think><answer>{a}</answer>" for a in answers]],
                       answer_format="answer_tag")
    assert items[0]["vote_keys"] == ["1/2", "7", "1/2", "7", "1/2"]
    m = summarize(items, ks=[1, 5])
    assert m["maj@5"] == 1.0 and m["pass@1"] == pytest.approx(0.6)


def test_stderr_is_the_standard_error_over_items():
    per_item = [[True, True], [True, False], [False, False], [True, True], [False, True]]
    shares = [sum(c) / 2 for c in per_item]
    m = summarize([{"correct": c} for c in per_item], ks=[1])
    assert m["pass@1"] == pytest.approx(statistics.fmean(shares))
    expected = math.sqrt(sum((s - m["pass@1"]) ** 2 for s in shares) / (len(shares) - 1) / len(shares))
    assert m["pass@1_stderr"] == pytest.approx(expected)
    assert mean_and_stderr([1.0]) == (1.0, 0.0)


def test_stderr_covers_the_truth_in_simulation():
    # 200 items of true accuracy 0.3: the mean is within 2 standard errors of 0.3 in ~95% of runs.
    rng = random.Random(0)
    hits = 0
    for _ in range(200):
        m, se = mean_and_stderr([float(rng.random() < 0.3) for _ in range(200)])
        hits += abs(m - 0.3) <= 2 * se
    assert 0.9 <= hits / 200 <= 0.99


# ------------------------------------------------------------------------------------ gold answers


def other_value_answers(golds: list[str]) -> list[str]:
    """Each item gets the gold of the next item whose answer has a different value (no chance matches:
    a random shuffle of GSM8K matches 1.1% of items by chance, its answers repeat that often)."""
    out = []
    for i, gold in enumerate(golds):
        j = (i + 1) % len(golds)
        while vote_key(golds[j]) == vote_key(gold):
            j = (j + 1) % len(golds)
        out.append(golds[j])
    return out


@pytest.mark.parametrize("bench", ["gsm8k", "math500", "aime24", "aime25"])
def test_math_gold_answers_score_100_and_other_answers_at_most_1_percent(bench, data_dir):
    rows = load_task_rows(get_task(bench))
    golds = [r["answer"] for r in rows]
    bare = summarize(score_math(rows, [[g] for g in golds], bare=True))
    boxed = summarize(score_math(rows, [[f"<think>Let me compute.</think>\nThe answer is $\\boxed{{{g}}}$."] for g in golds]))
    wrong = summarize(score_math(rows, [[a] for a in other_value_answers(golds)], bare=True))
    assert (bare["pass@1"], boxed["pass@1"]) == (1.0, 1.0)
    assert wrong["pass@1"] <= 0.01
    assert bare["num_items"] == {"gsm8k": 1319, "math500": 500, "aime24": 30, "aime25": 30}[bench]


def test_strict_rules_apply_to_completions():
    rows = [{"id": "1", "answer": "46"}]
    texts = ["<think>66 - 20</think> \\boxed{46}", "\\boxed{46}", "<think>x</think> \\boxed{66 - 20}",
             "<think>\\boxed{46}</think> so 46", "<think>x</think> \\boxed{45}, no, \\boxed{46}"]  # fmt: skip
    (item,) = score_math(rows, [texts])
    assert item["correct"] == [True, False, False, False, False]
    assert item["formatted"] == [True, False, True, False, False]
    assert item["vote_keys"][0] == "46" and item["vote_keys"][1] is None  # unformatted: no vote


# ------------------------------------------------------------------------------------ code


def test_humaneval_canonical_solutions_pass_all_through_the_cli(data_dir, tmp_path):
    rows = [json.loads(line) for line in (data_dir / "humaneval" / "test.jsonl").read_text().splitlines()]
    preds = tmp_path / "he.jsonl"
    preds.write_text("".join(json.dumps({"id": r["task_id"], "prediction": r["canonical_solution"]}) + "\n" for r in rows))
    assert eval_main(["--predictions", str(preds), "--benchmark", "humaneval", "--output", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["humaneval"]["pass@1"] == 1.0 and results["humaneval"]["num_items"] == 164
    details = [json.loads(line) for line in (tmp_path / "out" / "details" / "humaneval.jsonl").read_text().splitlines()]
    assert len(details) == 164 and all(d["status"] == ["passed"] for d in details)


def test_mbpp_reference_solutions_first_items(data_dir):
    rows = [r for r in load_task_rows(get_task("mbpp")) if r["id"] != "123"][:40]  # 123 runs ~1 s per test
    m = summarize(score_code(rows, [[r["code"]] for r in rows], bare=True))
    assert m["pass@1"] == 1.0


@pytest.mark.slow
def test_mbpp_reference_solutions_at_least_99_percent(data_dir):
    rows = load_task_rows(get_task("mbpp"))
    m = summarize(score_code(rows, [[r["code"]] for r in rows], bare=True))
    assert m["num_items"] == 257 and m["pass@1"] >= 0.99


def test_code_failures_are_recorded_with_their_sandbox_status(data_dir):
    rows = load_task_rows(get_task("humaneval"), max_samples=1)
    good = rows[0]["canonical_solution"]
    texts = [good, "    return not_defined_anywhere\n", "    while True:\n        pass\n",
             "Here is my answer in words.", f"I think:\n```python\n{rows[0]['prompt']}{good}```"]  # fmt: skip
    (item,) = score_code(rows, [texts], bare=True, timeout=1.0)
    assert item["correct"] == [True, False, False, False, True]
    assert item["status"][0] == "passed" and item["status"][2] == "timeout"
    assert item["status"][1] in ("error", "wrong_answer") and item["status"][3] == "error"  # prose: SyntaxError
    assert "NameError" in item["stderr"][1]
    generated = score_code(rows, [["no code block at all"]], bare=False)[0]
    assert generated["status"] == ["no_code"] and generated["formatted"] == [False]


# ------------------------------------------------------------------------------------ score-only files


def _gsm8k_file(tmp_path, data_dir, edit=None, n=None):
    rows = [json.loads(line) for line in (data_dir / "gsm8k" / "test.jsonl").read_text().splitlines()][: n or 5]
    lines = [{"id": r["id"], "completions": [f"<think>t</think> \\boxed{{{r['final_answer']}}}", "<think>t</think> \\boxed{0}"]}
             for r in rows]  # fmt: skip
    text = [json.dumps(line) for line in lines]
    if edit:
        edit(text)
    path = tmp_path / "preds.jsonl"
    path.write_text("\n".join(text) + "\n")
    return path


@pytest.mark.parametrize("edit,message", [
    (lambda t: t.__setitem__(2, json.dumps({"id": "gsm8k-test-99999", "prediction": "1"})), ":3: id 'gsm8k-test-99999' is not an item"),
    (lambda t: t.__setitem__(1, json.dumps({"id": "gsm8k-test-00001"})), ":2: needs exactly one of 'prediction'"),
    (lambda t: t.__setitem__(1, json.dumps({"prediction": "1"})), ":2: missing field 'id'"),
    (lambda t: t.__setitem__(3, t[0]), ":4: id 'gsm8k-test-00000' appears twice"),
    (lambda t: t.__setitem__(0, "{not json"), ":1: not valid JSON"),
    (lambda t: t.__setitem__(1, json.dumps({"id": "gsm8k-test-00001", "completions": ["a"]})), ":2: 1 completions where earlier"),
    (lambda t: t.__setitem__(1, json.dumps({"id": "gsm8k-test-00001", "completions": [1, 2]})), ":2: 'completions' must be"),
    (lambda t: t.pop(), "no line for 1 of 5 items"),
])
def test_bad_predictions_files_name_the_first_bad_line(tmp_path, data_dir, edit, message):
    path = _gsm8k_file(tmp_path, data_dir, edit)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("'", "'")):
        eval_main(["--predictions", str(path), "--benchmark", "gsm8k", "--output", str(tmp_path / "o"), "--max_samples", "5"])


def test_cli_exits_2_on_a_bad_predictions_file(tmp_path, data_dir, capsys):
    from r1kit.cli import main as r1kit_main

    path = _gsm8k_file(tmp_path, data_dir)  # 5 lines for a 1319-item benchmark
    with pytest.raises(SystemExit) as e:
        r1kit_main(["eval", "--predictions", str(path), "--benchmark", "gsm8k", "--output", str(tmp_path / "o")])
    assert e.value.code == 2 and "no line for 1314 of 1319 items" in capsys.readouterr().err


def test_score_only_results_and_details(tmp_path, data_dir):
    path = _gsm8k_file(tmp_path, data_dir)
    out = tmp_path / "o"
    assert eval_main(["--predictions", str(path), "--benchmark", "gsm8k", "--output", str(out), "--max_samples", "5"]) == 0
    m = json.loads((out / "results.json").read_text())["gsm8k"]
    assert (m["pass@1"], m["pass@2"], m["maj@1"], m["maj@2"], m["format_rate"]) == (0.5, 1.0, 0.5, 1.0, 1.0)
    assert m["num_items"] == 5 and m["num_samples"] == 2 and "length_chars_mean" in m
    d = json.loads((out / "details" / "gsm8k.jsonl").read_text().splitlines()[0])
    assert d["extracted"] == ["18", "0"] and d["correct"] == [True, False] and "Janet" in d["prompt"]


def test_custom_math_file_with_field_mapping(tmp_path):
    data = tmp_path / "mine.jsonl"
    data.write_text("\n".join(json.dumps({"qid": f"q{i}", "question": f"{i}+{i}?", "target": str(2 * i)}) for i in range(3)))
    preds = tmp_path / "p.jsonl"
    preds.write_text("\n".join(json.dumps({"id": f"q{i}", "prediction": str(2 * i if i else 5)}) for i in range(3)))
    out = tmp_path / "o"
    eval_main(["--predictions", str(preds), "--data", str(data), "--task", "math", "--id_field", "qid",
               "--prompt_field", "question", "--answer_field", "target", "--bare", "--output", str(out)])  # fmt: skip
    assert json.loads((out / "results.json").read_text())["custom:mine"]["pass@1"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("argv,message", [
    (["--benchmark", "gsm8k", "--output", "o"], "either `model`"),
    (["--predictions", "{p}", "--model", "m", "--benchmark", "gsm8k", "--output", "o"], "either `model`"),
    (["--predictions", "{p}", "--benchmark", "gsm8k", "math500", "--output", "o"], "exactly one --benchmark"),
    (["--predictions", "{p}", "--benchmark", "gsm9k", "--output", "o"], "unknown benchmark 'gsm9k'"),
    (["--predictions", "{p}", "--data", "{p}", "--output", "o"], "needs `task: math`"),
    (["--predictions", "{p}", "--benchmark", "gsm8k", "--output", "o", "--answer_format", "xml"], "answer_format"),
    (["--predictions", "{p}", "--benchmark", "gsm8k", "--output", "o", "--pass_k", "0", "2"], r"pass_k \[0\] must lie"),
    (["--model", "m", "--benchmark", "gsm8k", "--output", "o", "--n", "2", "--pass_k", "1", "4"], r"pass_k \[4\] must lie"),
])
def test_bad_arguments_are_user_errors(tmp_path, argv, message):
    p = tmp_path / "p.jsonl"
    p.write_text("{}\n")
    with pytest.raises(UserError, match=message):
        eval_main([a.replace("{p}", str(p)) for a in argv])


def test_custom_code_file(tmp_path):
    data = tmp_path / "tasks.jsonl"
    data.write_text("\n".join(json.dumps({"id": f"t{i}", "prompt": f"Write add{i}.", "test_list": [f"assert add{i}(1, 2) == 3"]})
                              for i in range(2)))  # fmt: skip
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"id": "t0", "prediction": "Sure:\n```python\ndef add0(a, b):\n    return a + b\n```"}) + "\n"
                     + json.dumps({"id": "t1", "prediction": "def add1(a, b):\n    return a - b\n"}) + "\n")  # fmt: skip
    out = tmp_path / "o"
    eval_main(["--predictions", str(preds), "--data", str(data), "--task", "code", "--output", str(out)])
    assert json.loads((out / "results.json").read_text())["custom:tasks"]["pass@1"] == 0.5


def test_hub_rows_without_the_id_column_get_the_local_files_ids(data_dir, monkeypatch):
    from evals import tasks

    local = load_task_rows(get_task("gsm8k"), max_samples=3)
    hub_like = [{"question": r["question"], "answer": r["answer"], "prompt": r["prompt"]} for r in local]
    monkeypatch.setattr(tasks, "load_benchmark", lambda name, split, bad_rows: hub_like)
    assert [r["id"] for r in load_task_rows(get_task("gsm8k"))] == [r["id"] for r in local]
    with pytest.raises(UserError, match="no id field 'unique_id'"):
        load_task_rows(get_task("math500"))


@pytest.mark.parametrize("case,message", [
    ("output_is_a_file", "output_dir '{t}/taken': '{t}/taken' is a file, not a directory"),
    ("output_below_a_file", "output_dir '{t}/taken/sub': '{t}/taken' is a file, not a directory"),
    ("predictions_is_a_directory", "file '{t}/predsdir' is a directory, not a file"),
    ("predictions_not_utf8", "preds.jsonl:2: not UTF-8 text"),
    ("results_json_corrupt", "results.json: not a valid JSON file"),
])  # fmt: skip
def test_bad_paths_are_user_errors_before_any_scoring(tmp_path, data_dir, monkeypatch, case, message):
    from evals import evaluate

    monkeypatch.setattr(evaluate, "score_task", lambda *a: pytest.fail("scored before the check"))
    preds, out = _gsm8k_file(tmp_path, data_dir), tmp_path / "o"
    (tmp_path / "taken").write_text("a file")
    (tmp_path / "predsdir").mkdir()
    if case.startswith("output"):
        out = tmp_path / ("taken" if case == "output_is_a_file" else "taken/sub")
    elif case == "predictions_is_a_directory":
        preds = tmp_path / "predsdir"
    elif case == "predictions_not_utf8":
        preds.write_bytes(preds.read_bytes().split(b"\n")[0] + b"\n\xff\xfe{}\n")
    if case == "results_json_corrupt":
        out.mkdir()
        (out / "results.json").write_text('{"gsm8k": ')
    with pytest.raises(UserError, match=re.escape(message.format(t=tmp_path))):
        eval_main(["--predictions", str(preds), "--benchmark", "gsm8k", "--output", str(out), "--max_samples", "5"])


def test_cli_exits_2_when_the_output_is_a_file(tmp_path, data_dir, capsys):
    from r1kit.cli import main as r1kit_main

    (tmp_path / "taken").write_text("a file")
    with pytest.raises(SystemExit) as e:
        r1kit_main(["eval", "--predictions", str(_gsm8k_file(tmp_path, data_dir)), "--benchmark", "gsm8k",
                    "--output", str(tmp_path / "taken"), "--max_samples", "5"])  # fmt: skip
    err = capsys.readouterr().err
    assert e.value.code == 2 and "is a file, not a directory" in err and "Traceback" not in err


def test_report_subcommand_bad_paths(tmp_path):
    (tmp_path / "taken").write_text("a file")
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="is a file, not a directory"):
        eval_main(["report", "--results", str(run), "--output", str(tmp_path / "taken")])
    with pytest.raises(UserError, match="expected a JSON object"):
        eval_main(["report", "--results", str(run), "--output", str(tmp_path / "rep")])
