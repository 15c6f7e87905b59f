"""`r1kit run`: recipe resolution, validation before anything runs, skip-complete, progress."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from r1kit import pipeline
from r1kit.errors import UserError
from r1kit.pipeline import DONE_FILE, Progress, load_pipeline, validate

ROOT = Path(__file__).resolve().parents[1]

GRPO = {"stage": "grpo", "dataset_name": "synthetic:arithmetic", "max_samples": 64, "max_steps": 2,
        "num_generations": 4, "per_device_train_batch_size": 8, "max_completion_length": 16,
        "rewards": [{"name": "accuracy"}, {"name": "format", "weight": 0.2}], "eval_steps": 0}
PRETRAIN = {"stage": "pretrain", "model_name_or_path": "${tiny}/policy", "tasks": ["arithmetic"],
            "max_difficulty": 1, "num_examples": 64, "eval_examples": 8, "max_steps": 2,
            "eval_accuracy_examples": 0, "max_seq_len": 64}


def write_recipe(tmp_path: Path, stages: list[dict], name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run"), "stages": stages}, sort_keys=False))
    return path


def r1kit(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "r1kit.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})


# ------------------------------------------------------------------------------ recipe resolution


def test_folders_placeholders_and_model_chaining(tmp_path):
    pipe = load_pipeline(str(write_recipe(tmp_path, [
        {"stage": "build-tiny"}, PRETRAIN, {**GRPO, "name": "rl"},
        {"stage": "eval", "model": ["${pretrain}", "${rl}"], "benchmarks": ["synthetic:arithmetic"]},
    ])))
    run = tmp_path / "run"
    assert [s.dir for s in pipe.stages] == [run / "tiny", run / "pretrain", run / "rl", run / "eval"]
    assert pipe.stages[1].raw["model_name_or_path"] == str(run / "tiny" / "policy")
    assert pipe.stages[2].raw["model_name_or_path"] == str(run / "pretrain")  # no model given: the previous one
    assert pipe.stages[3].raw["model"] == [str(run / "pretrain"), str(run / "rl")]
    assert all(s.raw["output_dir"] == str(s.dir) for s in pipe.stages)
    assert [s.raw.get("resume_from_checkpoint") for s in pipe.stages] == [None, "auto", "auto", None]


def test_a_stage_after_distill_starts_from_the_student(tmp_path):
    pipe = load_pipeline(str(write_recipe(tmp_path, [
        {"stage": "distill", "model_name_or_path": "s", "teacher_name_or_path": "t"}, {"stage": "grpo"}])))
    assert pipe.stages[1].raw["model_name_or_path"] == str(tmp_path / "run" / "distill" / "student")


def test_stage_recipe_file_plus_inline_keys_plus_cli_overrides(tmp_path):
    pipe = load_pipeline(str(write_recipe(tmp_path, [
        {"stage": "grpo", "recipe": str(ROOT / "recipes/tiny/grpo.yaml"), "max_steps": 7,
         "model_name_or_path": "some/where"}])), overrides={"grpo": {"learning_rate": 1e-5, "rewards.0.weight": 3}})
    raw = pipe.stages[0].raw
    assert raw["max_steps"] == 7 and raw["learning_rate"] == 1e-5 and raw["rewards"][0]["weight"] == 3
    assert raw["num_generations"] == 8  # from the stage recipe file
    assert raw["output_dir"] == str(tmp_path / "run" / "grpo")  # never the stage recipe's own output_dir


@pytest.mark.parametrize("stages,pattern", [
    ([{"stage": "grpoo"}], r"'stage' is 'grpoo' \(did you mean 'grpo'\?\)"),
    ([{"stage": "build-tiny"}, {"stage": "build-tiny"}], r"two stages are called 'tiny'"),
    ([{**GRPO, "model_name_or_path": "${pretrian}/x"}, {**PRETRAIN, "stage": "pretrain"}],
     r"'\$\{pretrian\}' names no stage \(did you mean 'pretrain'\?\)"),
    ([{**GRPO, "output_dir": "elsewhere"}], r"'output_dir' is set by the pipeline"),
    ([{"stage": "build-tiny", "name": "../up"}], r"must be a plain folder name"),
])
def test_bad_pipeline_recipes(tmp_path, stages, pattern):
    with pytest.raises(UserError, match=pattern):
        load_pipeline(str(write_recipe(tmp_path, stages)))


def test_unknown_stage_override(tmp_path):
    with pytest.raises(UserError, match=r"no stage named 'grpoo' \(did you mean 'grpo'\?\)"):
        load_pipeline(str(write_recipe(tmp_path, [GRPO])), overrides={"grpoo": {"max_steps": 1}})


# ------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize("change,pattern", [
    ({"lerning_rate": 1e-5}, r"stage 'grpo': unknown key 'lerning_rate' for GRPOConfig\. Did you mean 'learning_rate'"),
    ({"rewards": [{"name": "acuracy"}]}, r"stage 'grpo': unknown reward 'acuracy' \(did you mean 'accuracy'\?\)"),
    ({"dataset_name": "synthetic:arithmetik"}, r"stage 'grpo': dataset 'synthetic:arithmetik'"),
    ({"prompt_column": "question"}, r"key 'prompt_column': dataset 'synthetic:arithmetic' row 1 has no column 'question'"),
    ({"num_generations": 3}, r"stage 'grpo': num_generations \(3\) must divide"),
    ({"model_name_or_path": "${run}/nope"}, r"key 'model_name_or_path': model path '.*/run/nope' does not exist"),
    ({"model_name_or_path": "${grpo}/policy"}, r"inside the folder of stage 'grpo', which runs at or after this one"),
])
def test_validation_names_stage_and_key(tmp_path, change, pattern):
    pipe = load_pipeline(str(write_recipe(tmp_path, [{"stage": "build-tiny"}, PRETRAIN, {**GRPO, **change}])))
    with pytest.raises(UserError, match=pattern):
        validate(pipe)


def test_paths_written_by_earlier_stages_need_not_exist_yet(tmp_path):
    pipe = load_pipeline(str(write_recipe(tmp_path, [{"stage": "build-tiny"}, PRETRAIN, GRPO])))
    validate(pipe)
    assert not (tmp_path / "run").exists(), "validation must not create the run directory"


def test_stage_not_available(tmp_path, monkeypatch):
    from r1kit.cli import COMMANDS

    monkeypatch.setitem(COMMANDS, "grpo", (None, "not here"))
    pipe = load_pipeline(str(write_recipe(tmp_path, [GRPO])))
    with pytest.raises(UserError, match=r"stage 'grpo' is not available in this version of r1kit \(no `r1kit grpo`\)"):
        validate(pipe)


def test_typo_in_last_stage_exits_2_before_the_first_stage_runs(tmp_path):
    """The whole command a user types, with and without --dry_run: nothing runs, nothing is written."""
    recipe = write_recipe(tmp_path, [{"stage": "build-tiny"}, PRETRAIN, {**GRPO, "max_stpes": 3}])
    for extra in (["--dry_run"], []):
        r = r1kit("run", recipe, *extra)
        assert r.returncode == 2, r.stderr
        assert "stage 'grpo': unknown key 'max_stpes'" in r.stderr and "Did you mean 'max_steps'" in r.stderr
        assert "Traceback" not in r.stderr and not (tmp_path / "run").exists()
    r = r1kit("run", write_recipe(tmp_path, [{"stage": "build-tiny"}, PRETRAIN, GRPO]), "--dry_run")
    assert r.returncode == 0, r.stderr
    assert "[3/3 grpo] ok, would run" in r.stdout and not (tmp_path / "run").exists()


# ------------------------------------------------------------------------- running and skipping


def test_complete_stages_are_skipped_and_changed_ones_refused(tmp_path):
    """A real build-tiny stage: run, rerun (skipped, nothing rewritten), then change a key."""
    recipe = write_recipe(tmp_path, [{"stage": "build-tiny", "seed": 1}])
    pipe = load_pipeline(str(recipe))
    validate(pipe)
    shown = io.StringIO()
    pipeline.run(pipe, Progress(len(pipe.stages), interval_s=0.5, stream=shown))  # the stage runs as a process
    lines = shown.getvalue().splitlines()
    assert lines[0].startswith("[r1kit run 1/1 tiny] starting:") and "build-tiny --out" in lines[0]
    assert any("] running, stage 0m0" in line for line in lines[1:-1]), lines  # progress while it runs
    assert lines[-1].startswith("[r1kit run 1/1 tiny] done in")
    run = tmp_path / "run"
    marker = json.loads((run / "tiny" / DONE_FILE).read_text())
    assert marker["stage"] == "build-tiny" and marker["config"]["seed"] == 1
    assert (run / "tiny" / "policy" / "config.json").is_file()
    summary = json.loads((run / pipeline.SUMMARY_FILE).read_text())
    assert [s["status"] for s in summary["stages"]] == ["ran"]
    weights = run / "tiny" / "policy" / "model.safetensors"
    mtime = weights.stat().st_mtime_ns

    r = r1kit("run", recipe)
    assert r.returncode == 0 and "complete, skipped" in r.stderr, r.stderr
    assert "r1kit run finished" in r.stdout and "skipped (complete)" in r.stdout
    assert weights.stat().st_mtime_ns == mtime

    r = r1kit("run", recipe, "--tiny.seed", "2")
    assert r.returncode == 2 and "stage 'tiny': this stage is complete" in r.stderr and "keys: seed" in r.stderr


def test_complete_stage_after_an_incomplete_one_is_refused(tmp_path):
    pipe = load_pipeline(str(write_recipe(tmp_path, [{"stage": "build-tiny", "name": "a"},
                                                     {"stage": "build-tiny", "name": "b"}])))
    b = pipe.stages[1]
    b.dir.mkdir(parents=True)
    (b.dir / DONE_FILE).write_text(json.dumps({"config_hash": pipeline._config_hash(b.raw), "config": b.raw}))
    with pytest.raises(UserError, match=r"stage 'a' is not complete but later stage\(s\) b are"):
        validate(pipe)
    (pipe.stages[0].dir).mkdir()
    (pipe.stages[0].dir / DONE_FILE).write_text(json.dumps({"config_hash": pipeline._config_hash(pipe.stages[0].raw)}))
    validate(pipe)
    assert [s.done is not None for s in pipe.stages] == [True, True]


def test_a_second_run_on_the_same_run_dir_is_refused(tmp_path):
    pipe = load_pipeline(str(write_recipe(tmp_path, [{"stage": "build-tiny"}])))
    with pipeline._lock(pipe.run_dir), pytest.raises(UserError, match="another `r1kit run` is using"):
        pipeline._lock(pipe.run_dir)


def test_progress_line_reads_step_and_eta(tmp_path):
    pipe = load_pipeline(str(write_recipe(tmp_path, [{"stage": "build-tiny"}, PRETRAIN, GRPO])))
    validate(pipe)
    stage = pipe.stages[2]
    stage.dir.mkdir(parents=True)
    with open(stage.dir / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps({"step": step, "time": 0, "loss": 0.1}) + "\n" for step in (1, 2))
        f.write('{"step": 3, "tim')  # a line being written
    view = Progress(n=1)
    text = view.status(stage, t_start=time.time() - 60, first_step=0)
    assert text.startswith("step 2/2, stage 1m0") and "ETA 0m00s" in text
    assert view.status(stage, t_start=time.time() - 60, first_step=None).startswith("step 2/2")
