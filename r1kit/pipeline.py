"""`r1kit run RECIPE`: the whole R1 story in one command, stage after stage, resumable.

    r1kit run recipes/tiny/r1.yaml                      # build-tiny -> pretrain -> sft -> grpo -> distill -> eval -> report
    r1kit run recipes/tiny/r1.yaml --dry_run            # check every stage's keys, data, rewards and models; train nothing
    r1kit run recipes/tiny/r1.yaml --grpo.max_steps 50  # override one stage's key (`--<stage name>.<key> value`)

A pipeline recipe lists stages; each is a stage recipe (`recipe: recipes/tiny/grpo.yaml`) and/or inline
keys of that stage's config, plus optional `name` (its folder; default: the stage, `tiny` for build-tiny)
and `launcher` (e.g. `accelerate launch --config_file recipes/accelerate_configs/zero3.yaml`):

    run_dir: runs/r1_tiny               # default: runs/<recipe file stem>
    stages:
      - {stage: build-tiny}
      - {stage: pretrain, recipe: recipes/tiny/pretrain.yaml, model_name_or_path: "${tiny}/policy"}
      - {stage: grpo, recipe: recipes/tiny/grpo.yaml, max_steps: 100}

`${run}` is the run directory and `${<name>}` the folder of the stage called `<name>`. A training stage
without `model_name_or_path` among its inline keys starts from the closest earlier training stage's model.
Every stage writes into `run_dir/<name>/` (the pipeline sets `output_dir`, and
`resume_from_checkpoint: auto` where the stage has it), as an ordinary HF checkpoint.

How a run goes, and why:
- Everything is validated before the first stage starts (the stage's typed config, local model paths and
  hub ids, data columns, reward names), so a typo in the last stage does not cost the first ones.
  Paths that an earlier stage of this run will write are not required to exist yet.
- Each stage runs as its own process (`python -m r1kit.cli <stage> --config run_dir/<name>/stage.yaml`,
  or under `launcher`), so stages never import each other and a multi-GPU stage runs as it would alone.
- A stage is complete once its marker `stage_done.json` is written (atomically, after the stage process
  exited cleanly, i.e. after its final save). Complete stages are skipped; an interrupted one (kill -9
  included) reruns and resumes from its newest checkpoint. A complete stage whose config has changed is
  an error, not a silent reuse of stale output.
- One progress view: a line per stage start/end and, while a stage trains, its step, elapsed time and ETA
  read from the stage's `metrics.jsonl`. At the end, a summary with the report's path
  (`run_dir/pipeline_summary.json` too).
"""

from __future__ import annotations

import dataclasses
import difflib
import fcntl
import hashlib
import importlib
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from r1kit.config import arg, check_path, load_config, parse_overrides, read_yaml, set_dotted
from r1kit.errors import UserError, exit_on_user_error

DONE_FILE = "stage_done.json"
STAGE_RECIPE = "stage.yaml"
SUMMARY_FILE = "pipeline_summary.json"
LOCK_FILE = ".r1kit_run.lock"
SPEC_KEYS = ("stage", "name", "recipe", "launcher")
MODEL_STAGES = ("pretrain", "sft", "grpo", "distill")  # stages that train a model
MODEL_SUBDIR = {"distill": "student"}  # where in its folder a stage saves the model (default: the folder)
# Fields that name paths without declaring `path=` in their config (eval's model list, report inputs).
PATH_KINDS = {"model": "model", "results": "dir", "run_dir": "dir"}
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_][\w.-]*)\}")


@dataclass(kw_only=True)
class BuildTinyConfig:
    """`r1kit build-tiny`: tokenizer, MoE policy and dense student written into the stage folder."""

    output_dir: str = arg(help="Folder for tokenizer/, policy/, student/ (set by the pipeline).", nonempty=True)
    seed: int = arg(0, "Seed for the tokenizer corpus and the weights.")


@dataclass(kw_only=True)
class ReportConfig:
    """`r1kit eval report`: one report over several eval output folders and a training run's curves."""

    output_dir: str = arg(help="Where report.md, report.html and plots/ go (set by the pipeline).", nonempty=True)
    results: list[str] = arg(help="Eval output folders with results.json (${eval}/grpo).", nonempty=True)  # noqa: RUF009
    labels: list[str] = arg([], "Names for them in the report (default: each folder's run label).")  # noqa: RUF009
    run_dir: str | None = arg(None, "A training stage folder whose metrics.jsonl becomes training curves.")
    samples: int = arg(2, "Correct and incorrect samples shown per benchmark.", ge=0)

    def validate(self) -> None:
        if self.labels and len(self.labels) != len(self.results):
            raise ValueError(f"'labels' names {len(self.labels)} folders but 'results' has {len(self.results)}")


def _config_argv(stage: Stage) -> list[str]:
    return [stage.kind, "--config", str(stage.dir / STAGE_RECIPE)]


def _build_tiny_argv(stage: Stage) -> list[str]:
    return ["build-tiny", "--out", str(stage.dir), "--seed", str(stage.cfg.seed)]


def _report_argv(stage: Stage) -> list[str]:
    cfg = stage.cfg
    argv = ["eval", "report", "--results", *cfg.results, "--output", str(stage.dir), "--samples", str(cfg.samples)]
    argv += ["--labels", *cfg.labels] if cfg.labels else []
    return argv + (["--run_dir", cfg.run_dir] if cfg.run_dir else [])


@dataclass(frozen=True)
class Kind:
    """A stage kind: the `r1kit` command that runs it, how its argv is built, its default folder name."""

    command: str
    argv: Callable[[Stage], list[str]]
    folder: str
    config: str | None = None  # "module:Class"; None: the stage's entry in r1kit.configs.STAGES


KINDS: dict[str, Kind] = {
    "build-tiny": Kind("build-tiny", _build_tiny_argv, "tiny", "r1kit.pipeline:BuildTinyConfig"),
    "pretrain": Kind("pretrain", _config_argv, "pretrain"),
    "sft": Kind("sft", _config_argv, "sft"),
    "grpo": Kind("grpo", _config_argv, "grpo"),
    "distill": Kind("distill", _config_argv, "distill"),
    "eval": Kind("eval", _config_argv, "eval"),
    "report": Kind("eval", _report_argv, "report", "r1kit.pipeline:ReportConfig"),
}


@dataclass
class Stage:
    index: int
    kind: str
    name: str
    dir: Path
    raw: dict[str, Any]  # the resolved stage recipe, written to dir/stage.yaml
    launcher: list[str]
    source: str  # how errors name this stage
    cfg: Any = None  # the validated config object
    done: dict | None = None  # the completion marker, when the stage is complete
    status: str = "pending"
    wall_s: float = 0.0


@dataclass
class Pipeline:
    recipe: str
    run_dir: Path
    stages: list[Stage] = field(default_factory=list)


# ------------------------------------------------------------------------------------- loading


def load_pipeline(recipe: str, overrides: dict[str, dict[str, Any]] | None = None, run_dir: str | None = None) -> Pipeline:
    """Read a pipeline recipe into stages with resolved (not yet validated) stage recipes."""
    raw = read_yaml(recipe)
    unknown = sorted(set(raw) - {"run_dir", "stages"})
    if unknown:
        raise UserError(f"{recipe}: unknown top-level key '{unknown[0]}'; a pipeline recipe has run_dir and stages.")
    specs = raw.get("stages")
    if not isinstance(specs, list) or not specs or not all(isinstance(s, dict) for s in specs):
        raise UserError(f"{recipe}: 'stages' must be a non-empty list of mappings, each with a 'stage' key.")
    run = Path(run_dir or raw.get("run_dir") or Path("runs") / Path(recipe).stem)
    pipe = Pipeline(recipe, run)
    names = _stage_names(recipe, specs)
    dirs = {name: run / name for name in names}
    for i, (spec, name) in enumerate(zip(specs, names)):
        pipe.stages.append(_resolve_stage(pipe, i, spec, name, dirs))
    for name in overrides or {}:
        if name not in dirs:
            raise UserError(f"override '--{name}.…': no stage named '{name}'{_suggest(name, list(dirs))}; "
                            f"stages: {', '.join(dirs)}.")
    for stage in pipe.stages:
        for key, value in (overrides or {}).get(stage.name, {}).items():
            set_dotted(stage.raw, key, value)
    return pipe


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _stage_names(recipe: str, specs: list[dict]) -> list[str]:
    names = []
    for i, spec in enumerate(specs):
        kind = spec.get("stage")
        if kind not in KINDS:
            raise UserError(f"{recipe}: stages[{i}]: 'stage' is {kind!r}{_suggest(str(kind), list(KINDS))}; "
                            f"allowed: {', '.join(KINDS)}.")
        name = str(spec.get("name") or KINDS[kind].folder)
        if not re.fullmatch(r"[A-Za-z0-9_][\w.-]*", name):
            raise UserError(f"{recipe}: stages[{i}]: name {name!r} must be a plain folder name (letters, digits, _ . -).")
        if name in names or name == "run":
            raise UserError(f"{recipe}: two stages are called '{name}'; give one of them another `name:`.")
        names.append(name)
    return names


def _resolve_stage(pipe: Pipeline, i: int, spec: dict, name: str, dirs: dict[str, Path]) -> Stage:
    kind = spec["stage"]
    source = f"{pipe.recipe}: stage '{name}'"
    inline = {k: v for k, v in spec.items() if k not in SPEC_KEYS}
    raw = read_yaml(spec["recipe"]) if spec.get("recipe") else {}
    if "output_dir" in inline:
        raise UserError(f"{source}: 'output_dir' is set by the pipeline ({dirs[name]}); remove it.")
    if kind in MODEL_STAGES and "model_name_or_path" not in inline:
        earlier = [s for s in pipe.stages if s.kind in MODEL_STAGES]
        if earlier:
            inline["model_name_or_path"] = str(earlier[-1].dir / MODEL_SUBDIR.get(earlier[-1].kind, ""))
    for key, value in inline.items():
        set_dotted(raw, key, value)
    raw = _substitute(raw, {"run": pipe.run_dir, **dirs}, source)
    raw["output_dir"] = str(dirs[name])
    if kind in MODEL_STAGES:  # an interrupted stage continues from its newest checkpoint
        raw.setdefault("resume_from_checkpoint", "auto")
    launcher = _launcher(str(spec["launcher"]), source) if spec.get("launcher") else [sys.executable]
    return Stage(i, kind, name, dirs[name], raw, launcher, source)


def _launcher(text: str, source: str) -> list[str]:
    """`accelerate launch ... --machine_rank $MACHINE_RANK`: environment variables expanded, none left unset."""
    expanded = os.path.expandvars(text)
    unset = re.findall(r"\$\{?(\w+)", expanded)
    if unset:
        raise UserError(f"{source}: launcher uses ${unset[0]}, which is not set in the environment; export it.")
    return shlex.split(expanded)


def _substitute(value: Any, names: dict[str, Path], source: str) -> Any:
    """Replace `${run}` and `${<stage name>}` in every string of a (nested) recipe value."""
    if isinstance(value, dict):
        return {k: _substitute(v, names, source) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, names, source) for v in value]
    if not isinstance(value, str):
        return value

    def one(m: re.Match) -> str:
        if m[1] not in names:
            raise UserError(f"{source}: '${{{m[1]}}}' names no stage{_suggest(m[1], list(names))}; "
                            f"use ${{run}} or one of: {', '.join('${' + n + '}' for n in names if n != 'run')}.")
        return str(names[m[1]])

    return _PLACEHOLDER.sub(one, value)


# ---------------------------------------------------------------------------------- validation


def config_class(kind: str, source: str = "recipe") -> type:
    """The typed config class of a stage kind; UserError when this install does not have the stage."""
    from r1kit.cli import COMMANDS
    from r1kit.configs import STAGES

    target = KINDS[kind].config or STAGES.get(kind)
    command = COMMANDS.get(KINDS[kind].command, (None, ""))[0]
    modules = [t.partition(":")[0] for t in (target, command) if t]
    if target is None or command is None or any(importlib.util.find_spec(m) is None for m in modules):
        raise UserError(f"{source}: stage '{kind}' is not available in this version of r1kit "
                        f"(no `r1kit {KINDS[kind].command}`); remove the stage from the recipe.")
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def validate(pipe: Pipeline, hub: bool = True, data: bool = True) -> None:
    """Check every stage before anything runs; fills each stage's cfg and done marker.

    hub=False: hub ids and hub datasets are not looked up (a real-scale recipe checked offline).
    data=False: dataset rows are not loaded (column checks skipped)."""
    for stage in pipe.stages:
        cls = config_class(stage.kind, stage.source)
        stage.cfg = load_config(cls, None, dict(stage.raw), check_paths=False, source=stage.source)
        pending = [s.dir for s in pipe.stages[: stage.index]]
        later = {s.dir: s.name for s in pipe.stages[stage.index:]}
        _check_paths(stage, pending, later, hub)
        _check_rewards(stage)
        if data:
            _check_data(stage, pending, hub)
        stage.done = _read_done(stage)
    _check_done_prefix(pipe)


def _inside(value: str, dirs) -> Path | None:
    p = Path(value).expanduser().resolve()
    return next((d for d in dirs if p == d.resolve() or d.resolve() in p.parents), None)


def _check_paths(stage: Stage, pending: list[Path], later: dict[Path, str], hub: bool) -> None:
    """Path fields exist, unless an earlier stage of this run writes them; none points at a later stage."""
    hints = {f.name: f for f in dataclasses.fields(stage.cfg)}
    for key, value in _path_values(stage.cfg):
        if key == "output_dir":
            continue
        if (d := _inside(value, later)) is not None:
            raise UserError(f"{stage.source}: key '{key}' is '{value}', inside the folder of stage '{later[d]}', "
                            "which runs at or after this one. Reorder the stages or fix the path.")
        if _inside(value, pending) is not None:
            continue  # written by an earlier stage of this run
        kind = hints[key].metadata.get("path") or PATH_KINDS[key]
        check_path(key, value, kind, stage.source, check_paths=True if hub else "local")


def _path_values(cfg: Any) -> list[tuple[str, str]]:
    """(key, path) for fields that name files, folders or models, including eval's model list."""
    out = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        is_path = "path" in f.metadata or f.name in PATH_KINDS
        if not is_path or value is None:
            continue
        items = value if isinstance(value, list) else [value]
        out += [(f.name, v) for v in items if isinstance(v, str)]
    return out


def _check_rewards(stage: Stage) -> None:
    specs = list(getattr(stage.cfg, "rewards", None) or [])
    if isinstance(getattr(stage.cfg, "eval_reward", None), str):
        specs.append({"name": stage.cfg.eval_reward})
    if specs:
        registry = importlib.import_module("rewards.registry")
        try:
            registry.build_rewards(specs)
        except UserError as e:
            raise UserError(f"{stage.source}: {e}") from None


def _check_data(stage: Stage, pending: list[Path], hub: bool) -> None:
    """Load the stage's rows the way it will (columns checked) unless an earlier stage writes them."""
    name = getattr(stage.cfg, "dataset_name", None)
    if not name or _inside(name, pending) is not None:
        return
    from r1kit.data import ALIASES, BENCHMARKS, data_dir, load_rows

    local = name.startswith("synthetic:") or Path(name).expanduser().exists() or (
        name.lower() in {**BENCHMARKS, **ALIASES} and data_dir() is not None)
    if not local and not hub:
        return
    try:
        rows = load_rows(stage.cfg)
    except UserError as e:
        raise UserError(f"{stage.source}: {e}") from None
    columns = {f.name: getattr(stage.cfg, f.name) for f in dataclasses.fields(stage.cfg) if f.name.endswith("_column")}
    for key, column in columns.items():
        if isinstance(column, str) and (bad := next((i for i, r in enumerate(rows) if column not in r), None)) is not None:
            raise UserError(f"{stage.source}: key '{key}': dataset '{name}' row {bad + 1} has no column '{column}' "
                            f"(it has: {', '.join(sorted(rows[bad]))}).")


def _config_hash(raw: dict) -> str:
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _read_done(stage: Stage) -> dict | None:
    marker = stage.dir / DONE_FILE
    if not marker.is_file():
        return None
    done = json.loads(marker.read_text())
    if done.get("config_hash") != _config_hash(stage.raw):
        old, new = done.get("config", {}), stage.raw
        changed = sorted(k for k in {*old, *new} if old.get(k) != new.get(k))
        raise UserError(
            f"{stage.source}: this stage is complete in {stage.dir} but its config has changed since "
            f"(keys: {', '.join(changed) or '?'}). Delete {stage.dir} (and later stages' folders) to rerun it "
            "with the new config, or give another --run_dir.")
    return done


def _check_done_prefix(pipe: Pipeline) -> None:
    """A complete stage after an incomplete one would be skipped although its input is about to change."""
    for i, stage in enumerate(pipe.stages):
        later_done = [s.name for s in pipe.stages[i + 1:] if s.done]
        if stage.done is None and later_done:
            raise UserError(
                f"{pipe.recipe}: stage '{stage.name}' is not complete but later stage(s) {', '.join(later_done)} "
                f"are: they were made from an older '{stage.name}'. Delete their folders under {pipe.run_dir} "
                "to rerun them.")


# ------------------------------------------------------------------------------------- running


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _lock(run_dir: Path):
    run_dir.mkdir(parents=True, exist_ok=True)
    # one lock per host: on a shared filesystem every node of a multi-node stage runs the same pipeline
    handle = open(run_dir / f"{LOCK_FILE}.{os.uname().nodename}", "w")  # noqa: SIM115 -- held open (and locked) for the whole run
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UserError(f"another `r1kit run` is using {run_dir}; wait for it or give another --run_dir.") from None
    return handle


def _die_with_parent() -> None:
    """Child side: get SIGKILL when the pipeline process dies (kill -9 included), so no orphan keeps writing."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def command(stage: Stage) -> list[str]:
    """The full command line of a stage."""
    kind = KINDS[stage.kind]
    return [*stage.launcher, "-m", "r1kit.cli", *kind.argv(stage)]


def run_stage(stage: Stage, view: Progress) -> None:
    stage.dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(stage.dir / STAGE_RECIPE, yaml.safe_dump(stage.raw, sort_keys=False))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.time()
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    proc = subprocess.Popen(command(stage), env=env, preexec_fn=preexec)  # noqa: PLW1509 -- only prctl runs there
    with view.watch(stage):
        rc = proc.wait()
    stage.wall_s = time.time() - t0
    if rc == 2:
        raise UserError(f"{stage.source} stopped on the error above (exit 2). Fix it and rerun the same command.")
    if rc != 0:
        raise StageFailed(f"stage '{stage.name}' failed (exit {rc}); see its output above. Rerun the same command: "
                          f"complete stages are skipped and '{stage.name}' resumes from its newest checkpoint.")
    done = {"stage": stage.kind, "name": stage.name, "config_hash": _config_hash(stage.raw), "config": stage.raw,
            "wall_s": round(stage.wall_s, 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    _write_atomic(stage.dir / DONE_FILE, json.dumps(done, indent=1, default=str))
    stage.done, stage.status = done, "ran"


class StageFailed(Exception):
    """A stage process exited with an error that is not a user error."""


def run(pipe: Pipeline, view: Progress | None = None) -> dict:
    """Run every stage not yet complete, in order; returns the summary (also written to run_dir)."""
    view = view or Progress(len(pipe.stages))
    with _lock(pipe.run_dir):
        for stage in pipe.stages:
            if stage.done:
                stage.status, stage.wall_s = "skipped (complete)", float(stage.done.get("wall_s", 0))
                view.line(stage, f"complete, skipped ({stage.dir / DONE_FILE})")
                continue
            view.line(stage, f"starting: {shlex.join(command(stage))}")
            run_stage(stage, view)
            view.line(stage, f"done in {_fmt(stage.wall_s)}")
        summary = _summary(pipe)
        _write_atomic(pipe.run_dir / SUMMARY_FILE, json.dumps(summary, indent=1))
    return summary


def report_path(pipe: Pipeline) -> Path | None:
    for stage in reversed(pipe.stages):
        if stage.kind in ("report", "eval") and (stage.dir / "report.html").is_file():
            return stage.dir / "report.html"
    return None


def _summary(pipe: Pipeline) -> dict:
    report = report_path(pipe)
    return {"recipe": pipe.recipe, "run_dir": str(pipe.run_dir), "report": str(report) if report else None,
            "stages": [{"name": s.name, "stage": s.kind, "status": s.status, "wall_s": round(s.wall_s, 1),
                        "output": str(s.dir)} for s in pipe.stages]}


# ------------------------------------------------------------------------------------ progress


def _fmt(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


def _last_step(metrics: Path) -> int | None:
    """Step of the last line of a stage's metrics.jsonl (read from the end: the file grows)."""
    if not metrics.is_file():
        return None
    with open(metrics, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
        lines = f.read().decode(errors="replace").strip().splitlines()
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            continue
    return None


class Progress:
    """One view of the whole run on stderr: `[i/N name] ...` lines, and the running stage's step/ETA."""

    def __init__(self, n: int, interval_s: float = 30.0, stream=None):
        self.n, self.interval_s, self.stream, self.t0 = n, interval_s, stream or sys.stderr, time.time()

    def line(self, stage: Stage, text: str) -> None:
        print(f"[r1kit run {stage.index + 1}/{self.n} {stage.name}] {text} (run {_fmt(time.time() - self.t0)})",
              file=self.stream, flush=True)

    def watch(self, stage: Stage):
        return _Watcher(self, stage)

    def status(self, stage: Stage, t_start: float, first_step: int | None) -> str | None:
        step, total = _last_step(stage.dir / "metrics.jsonl"), getattr(stage.cfg, "max_steps", 0) or 0
        elapsed = time.time() - t_start
        if step is None or total <= 0:
            return f"running, stage {_fmt(elapsed)}"
        done_here = step - (first_step or 0)
        eta = f", ETA {_fmt(elapsed / done_here * (total - step))}" if done_here > 0 else ""
        return f"step {step}/{total}, stage {_fmt(elapsed)}{eta}"


class _Watcher:
    """While a stage runs, print its progress line every interval_s (from a daemon thread)."""

    def __init__(self, view: Progress, stage: Stage):
        self.view, self.stage, self.stop = view, stage, threading.Event()

    def __enter__(self):
        first = _last_step(self.stage.dir / "metrics.jsonl")  # a resumed stage starts past 0
        t_start = time.time()

        def loop():
            while not self.stop.wait(self.view.interval_s):
                text = self.view.status(self.stage, t_start, first)
                if text:
                    self.view.line(self.stage, text)

        self.thread = threading.Thread(target=loop, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


# ------------------------------------------------------------------------------------------ CLI

USAGE = """usage: r1kit run RECIPE [--dry_run] [--run_dir DIR] [--no_hub_check] [--<stage name>.<key> VALUE ...]

  --dry_run        validate every stage (keys, model paths, data columns, reward names) and print the
                   commands; train nothing
  --run_dir DIR    run directory (default: the recipe's run_dir, else runs/<recipe stem>)
  --no_hub_check   do not look hub ids and hub datasets up (check a real-scale recipe offline)
  --<stage>.<key>  override one key of one stage, e.g. --grpo.max_steps 50
"""


def _parse_argv(argv: list[str]) -> tuple[str, dict]:
    if not argv or argv[0] in ("-h", "--help") or argv[0].startswith("--"):
        print(USAGE, file=sys.stdout if argv and argv[0] in ("-h", "--help") else sys.stderr)
        raise SystemExit(0 if argv and argv[0] in ("-h", "--help") else 2)
    flags: dict[str, Any] = {"dry_run": False, "no_hub_check": False, "run_dir": None, "stages": {}}
    for key, value in parse_overrides(argv[1:]):
        if key in flags and key != "stages":
            flags[key] = value
        elif "." in key:
            name, _, rest = key.partition(".")
            flags["stages"].setdefault(name, {})[rest] = value
        else:
            raise UserError(f"unknown option '--{key}'{_suggest(key, [k for k in flags if k != 'stages'])}.\n{USAGE}")
    return argv[0], flags


@exit_on_user_error
def cli_run(argv: list[str]) -> int:
    recipe, flags = _parse_argv(argv)
    pipe = load_pipeline(recipe, flags["stages"], flags["run_dir"] and str(flags["run_dir"]))
    validate(pipe, hub=not flags["no_hub_check"])
    if flags["dry_run"]:
        for s in pipe.stages:
            state = "complete, would be skipped" if s.done else "would run"
            print(f"[{s.index + 1}/{len(pipe.stages)} {s.name}] ok, {state}: {shlex.join(command(s))}")
        print(f"dry run: {len(pipe.stages)} stages valid; run directory {pipe.run_dir}")
        return 0
    try:
        summary = run(pipe)
    except StageFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    _print_summary(summary)
    return 0


def _print_summary(summary: dict) -> None:
    print(f"\nr1kit run finished: {summary['run_dir']}")
    for s in summary["stages"]:
        print(f"  {s['name']:<18} {s['stage']:<10} {s['status']:<20} {_fmt(s['wall_s']):>8}  {s['output']}")
    print(f"report: {summary['report'] or '(no eval or report stage wrote report.html)'}")
