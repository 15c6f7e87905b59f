"""Evaluation reports: `report.md`, a self-contained `report.html` (plots embedded as base64 PNG) and
the PNG plots themselves, from one or more eval output directories (and a training run).

    r1kit eval report --results runs/eval/base runs/eval/grpo --run_dir runs/tiny/grpo --output runs/report

What a reader sees, top to bottom: a summary table (pass@1 ± standard error, one column per model, the
change against the first model), a pass@1 bar chart with error bars, then per benchmark every metric per
model, pass@k curves (n > 1) and completion lengths of correct vs incorrect samples; training curves
from the run's `metrics.jsonl` (rewards per function, accuracy, completion length, KL, entropy, clip
fraction, expert load per layer: whatever keys it has); and a few correct and incorrect samples.

Rates are shown in percent with one decimal (`pass@1` 0.4567 -> 45.7); the JSON keeps full precision.
Plots use matplotlib's object API on an Agg canvas, so no global backend is switched and reports can be
written from any thread.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Callable
from pathlib import Path

from evals.metrics import mean_and_stderr
from r1kit.errors import UserError

PERCENT_PREFIXES = ("pass@", "maj@", "format_rate", "truncation_rate")
_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
_SAMPLE_CHARS = 1500


# ------------------------------------------------------------------------------------ loading


def ensure_output_dir(path: Path, key: str) -> Path:
    """Create the output directory ``path`` before any work, or say (a `UserError` naming ``key``) why it
    cannot be one: a file in its place or above it, or no permission."""
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UserError(f"{key} '{path}': '{blocker}' is a file, not a directory. Give a directory (created if missing).")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{key} '{path}': cannot create the directory ({e.strerror}). Give a writable path.") from None
    return path


def read_json(path: Path) -> dict:
    """A JSON object file this package wrote (results.json); anything else is a `UserError`."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a valid JSON file ({e}). Delete it or give another directory.") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object of benchmark -> metrics, got {type(data).__name__}.")
    return data


def _read_jsonl(path: Path, what: str) -> list[dict]:
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{lineno}: not valid JSON ({e.msg}); {what}") from None
    return rows


def load_entry(label: str, path: Path) -> dict:
    """One eval output directory: its results and per-item details by benchmark."""
    results_path = path / "results.json"
    if not results_path.is_file():
        raise UserError(f"{path} holds no results.json: give the output directory of an `r1kit eval` run.")
    results = read_json(results_path)
    details = {}
    for bench in results:
        f = path / "details" / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', bench)}.jsonl"
        details[bench] = _read_jsonl(f, "rerun `r1kit eval` to rewrite the details.") if f.is_file() else []
    info = read_json(path / "run_info.json") if (path / "run_info.json").is_file() else {}
    model = info.get("model")
    params = model_parameters(Path(model)) if model else None
    return {"label": label, "path": path, "results": results, "details": details, "parameters": params}


def model_parameters(model_dir: Path) -> int | None:
    """Parameter count of a saved model (every stored tensor: weights and saved buffers such as MoE router
    biases), read from its safetensors headers (no weights loaded); None when
    the folder is not a local safetensors checkpoint (a hub id, a LoRA adapter only, .bin weights)."""
    files = sorted(model_dir.glob("model*.safetensors")) if model_dir.is_dir() else []
    total = 0
    for f in files:
        with f.open("rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        for name, meta in header.items():
            if name != "__metadata__":
                total += math.prod(meta["shape"])
    return total or None


def _count(n: int | None) -> str:
    """`2.09M`, `368.6k`, `-`.

    >>> _count(2091136), _count(368640), _count(None)
    ('2.09M', '368.6k', '-')
    """
    if n is None:
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def read_run_metrics(run_dir: Path) -> list[dict]:
    """The rows of a training run's `metrics.jsonl` (one per logged step)."""
    f = run_dir / "metrics.jsonl"
    if not f.is_file():
        raise UserError(f"run_dir {run_dir} has no metrics.jsonl (give the output_dir of a GRPO or SFT run).")
    return _read_jsonl(f, "a run stopped mid-write leaves a partial last line: delete it.")


# ------------------------------------------------------------------------------------ numbers


def fmt(key: str, value: float | None) -> str:
    """How a metric is printed in the tables: rates in percent with one decimal, counts as integers.

    >>> fmt("pass@1", 0.45678), fmt("num_items", 164.0), fmt("length_tokens_mean", 812.25), fmt("maj@4", None)
    ('45.7', '164', '812.2', '-')
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if key.startswith(PERCENT_PREFIXES) and not key.endswith("_stderr"):
        return f"{100 * value:.1f}"
    if key.endswith("_stderr"):
        return f"{100 * value:.1f}"
    if key.startswith("num_"):
        return str(int(value))
    return f"{value:.1f}"


def pass1_cell(metrics: dict | None) -> str:
    """`45.7 ± 1.2` (percent, one standard error).

    >>> pass1_cell({"pass@1": 0.5, "pass@1_stderr": 0.0125})
    '50.0 ± 1.2'
    """
    if metrics is None:
        return "-"
    return f"{fmt('pass@1', metrics['pass@1'])} ± {fmt('pass@1_stderr', metrics['pass@1_stderr'])}"


def paired_stderr(items: list[dict], base_items: list[dict]) -> float | None:
    """Standard error of the mean per-item difference of pass@1 shares when both ran the same items
    (a paired comparison: item difficulty cancels, so it is tighter than the unpaired error); else None.

    >>> a = [{"id": i, "correct": [c]} for i, c in enumerate([True, True, False, True])]
    >>> b = [{"id": i, "correct": [c]} for i, c in enumerate([True, False, False, True])]
    >>> round(paired_stderr(a, b), 4), paired_stderr(a, b[:3])
    (0.25, None)
    """
    share = lambda it: sum(it["correct"]) / len(it["correct"])
    mine, theirs = {it["id"]: share(it) for it in items}, {it["id"]: share(it) for it in base_items}
    if not mine or mine.keys() != theirs.keys():
        return None
    return mean_and_stderr([mine[i] - theirs[i] for i in mine])[1]


def delta_cell(metrics: dict | None, base: dict | None, paired_se: float | None = None) -> str:
    """Change of pass@1 against the baseline in points, with the standard error of the difference: the
    paired one when given (same items), else that of independent samples, sqrt(se_a^2 + se_b^2).

    >>> delta_cell({"pass@1": 0.6, "pass@1_stderr": 0.03}, {"pass@1": 0.5, "pass@1_stderr": 0.04})
    '+10.0 ± 5.0'
    >>> delta_cell({"pass@1": 0.6, "pass@1_stderr": 0.03, "num_items": 5}, {"pass@1": 0.5, "pass@1_stderr": 0.04})
    'n/a (other items)'
    """
    if metrics is None or base is None:
        return "-"
    if metrics.get("num_items") != base.get("num_items"):
        return "n/a (other items)"  # a subset or another split: the difference would not be a model effect
    diff = 100 * (metrics["pass@1"] - base["pass@1"])
    se = 100 * (paired_se if paired_se is not None else math.hypot(metrics["pass@1_stderr"], base["pass@1_stderr"]))
    return f"{diff:+.1f} ± {se:.1f}"


def metric_keys(entries: list[dict], bench: str) -> list[str]:
    keys: list[str] = []
    for e in entries:
        for k in e["results"].get(bench, {}):
            if k not in keys and k not in ("pass@1_stderr",):
                keys.append(k)
    return keys


# ------------------------------------------------------------------------------------ plots


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def plot_pass1(entries: list[dict], benches: list[str], path: Path) -> Path:
    """Grouped bars: pass@1 per benchmark and model, error bars of one standard error."""
    fig = _figure(max(5.0, 1.4 * len(benches) * max(1, len(entries)) ** 0.5 + 2), 3.9)
    ax = fig.add_subplot()
    width = 0.8 / len(entries)
    for m, e in enumerate(entries):
        xs = [b + (m - (len(entries) - 1) / 2) * width for b in range(len(benches))]
        res = [e["results"].get(b) for b in benches]
        ys = [100 * r["pass@1"] if r else 0.0 for r in res]
        errs = [100 * r["pass@1_stderr"] if r else 0.0 for r in res]
        bars = ax.bar(xs, ys, width, yerr=errs, capsize=3, label=e["label"], color=_COLORS[m % len(_COLORS)])
        ax.bar_label(bars, labels=[f"{y:.1f}" if r else "" for y, r in zip(ys, res)], fontsize=8, padding=2)
    ax.set_xticks(range(len(benches)), benches)
    ax.set_ylabel("pass@1 (%)  ± 1 s.e.")
    ax.set_ylim(0, 110)
    ax.grid(axis="y", alpha=0.3)
    # Below the axes: inside, the legend would cover the bars' value labels near 100%.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=min(len(entries), 4), frameon=False)
    ax.set_title("pass@1 by benchmark")
    return _save(fig, path)


def plot_pass_k(entries: list[dict], bench: str, path: Path) -> Path | None:
    """pass@k (solid) and maj@k (dashed) against k, one colour per model; None when every n is 1."""
    series = []
    for e in entries:
        r = e["results"].get(bench) or {}
        ks = sorted(int(k.split("@")[1]) for k in r if re.fullmatch(r"pass@\d+", k))
        if len(ks) > 1:
            series.append((e["label"], r, ks))
    if not series:
        return None
    fig = _figure(5.5, 3.6 + 0.2 * len(series))
    ax = fig.add_subplot()
    for m, (label, r, ks) in enumerate(series):
        color = _COLORS[m % len(_COLORS)]
        ax.plot(ks, [100 * r[f"pass@{k}"] for k in ks], "o-", color=color, label=f"{label} pass@k")
        mk = [k for k in ks if f"maj@{k}" in r]
        if mk:
            ax.plot(mk, [100 * r[f"maj@{k}"] for k in mk], "s--", color=color, alpha=0.7, label=f"{label} maj@k")
    ax.set_xscale("log", base=2)
    all_ks = sorted({k for _, _, ks in series for k in ks})
    ax.set_xticks(all_ks, [str(k) for k in all_ks])
    ax.minorticks_off()
    ax.set_xlabel("k (samples)")
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)
    ax.set_title(f"{bench}: pass@k and maj@k")
    return _save(fig, path)


def plot_lengths(entries: list[dict], bench: str, path: Path) -> Path | None:
    """Histograms of completion length, correct vs incorrect samples, one panel per model."""
    panels = [(e["label"], e["details"].get(bench) or []) for e in entries]
    panels = [(label, items) for label, items in panels if items and items[0].get("lengths")]
    if not panels:
        return None
    fig = _figure(min(4.2 * len(panels), 13), 3.0)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (label, items) in zip(axes, panels):
        good = [n for it in items for n, ok in zip(it["lengths"], it["correct"]) if ok]
        bad = [n for it in items for n, ok in zip(it["lengths"], it["correct"]) if not ok]
        top = max(good + bad) or 1
        bins = [top * i / 30 for i in range(31)]
        ax.hist([good, bad], bins=bins, stacked=True, color=["#2ca02c", "#d62728"],
                label=[f"correct ({len(good)})", f"incorrect ({len(bad)})"])  # fmt: skip
        ax.set_xlabel(f"completion length ({items[0].get('length_unit', 'chars')})")
        ax.set_ylabel("samples")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"{bench}: completion lengths", fontsize=10)
    return _save(fig, path)


# Training-curve panels: (title, which metric keys go in it). Keys that match no panel are not drawn.
_PANELS: list[tuple[str, Callable[[str], bool]]] = [
    ("reward (total and per function)", lambda k: k == "reward" or k.startswith("rewards/")),
    # The accuracy reward's mean is already in the reward panel.
    ("accuracy (train and held-out)", lambda k: "accuracy" in k and not k.startswith("rewards/")),
    ("completion length (tokens)", lambda k: k == "completion_length"),
    ("truncated share", lambda k: k == "truncated"),
    ("KL to reference", lambda k: k == "kl" or k.endswith("/kl")),
    ("entropy", lambda k: k == "entropy"),
    ("clip fraction", lambda k: "clip" in k),
    ("expert load max/mean per layer", lambda k: re.fullmatch(r"moe/layer\d+/max_over_mean", k) is not None),
    ("routing entropy per layer", lambda k: re.fullmatch(r"moe/layer\d+/entropy", k) is not None),
    ("loss", lambda k: k == "loss"),
]


def training_panels(rows: list[dict]) -> list[tuple[str, list[str]]]:
    """The panels a run's metrics fill, each with its keys (in first-seen order).

    >>> training_panels([{"step": 1, "reward": 0.5, "rewards/format": 0.2, "kl": 0.01, "other": 3}])
    [('reward (total and per function)', ['reward', 'rewards/format']), ('KL to reference', ['kl'])]
    """
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys and k not in ("step", "time")]
    panels = [(title, [k for k in keys if match(k)]) for title, match in _PANELS]
    return [(title, ks) for title, ks in panels if ks]


def rolling_mean(values: list[float], window: int) -> list[float]:
    """Trailing mean over up to `window` values (shorter at the start).

    >>> rolling_mean([1.0, 3.0, 5.0, 7.0], 2)
    [1.0, 2.0, 4.0, 6.0]
    """
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def plot_training(rows: list[dict], path: Path) -> Path | None:
    """One small panel per metric group against the optimizer step (raw values faint, rolling mean solid)."""
    panels = training_panels(rows)
    if not panels:
        return None
    cols = 3
    nrows = math.ceil(len(panels) / cols)
    fig = _figure(13, 2.8 * nrows)
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    for ax, (title, keys) in zip(axes, panels):
        for i, key in enumerate(keys):
            pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None and "step" in r]
            if not pts:
                continue
            color, label = _COLORS[i % len(_COLORS)], key.removeprefix("rewards/").removeprefix("moe/")
            steps, values = zip(*pts)
            if len(pts) < 0.5 * len(rows):  # eval metrics: a few points, drawn with markers
                ax.plot(steps, values, "o-", ms=3, lw=1.2, color=color, label=label)
            else:  # per-step metrics are noisy: faint raw values under their rolling mean
                ax.plot(steps, values, "-", lw=0.8, alpha=0.3, color=color)
                ax.plot(steps, rolling_mean(list(values), max(1, len(values) // 20)), "-", lw=1.5, color=color, label=label)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=6, ncol=2 if len(keys) > 4 else 1)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return _save(fig, path)


# ------------------------------------------------------------------------------------ document
# The report is a list of blocks rendered twice (Markdown and HTML), so the two always show the same numbers:
# ("h1"|"h2"|"h3"|"p", text), ("table", headers, rows), ("img", path, caption), ("sample", dict).


def summary_blocks(entries: list[dict], benches: list[str], plot_dir: Path) -> list[tuple]:
    labels = [e["label"] for e in entries]
    headers = ["benchmark", *(f"{label} pass@1" for label in labels)]
    headers += [f"Δ {label} vs {labels[0]}" for label in labels[1:]]
    rows = []
    for b in benches:
        cells = [pass1_cell(e["results"].get(b)) for e in entries]
        base = entries[0]
        deltas = [delta_cell(e["results"].get(b), base["results"].get(b),
                             paired_stderr(e["details"].get(b) or [], base["details"].get(b) or []))
                  for e in entries[1:]]  # fmt: skip
        rows.append([b, *cells, *deltas])
    note = ("pass@1 in percent ± one standard error over items; Δ in points ± the standard error of the "
            "per-item difference (paired: both models on the same items).")
    blocks: list[tuple] = [("h2", "Summary"), ("p", note), ("table", headers, rows)]
    blocks.append(("img", plot_pass1(entries, benches, plot_dir / "pass1.png"), "pass@1 per benchmark (error bars: 1 s.e.)"))
    return blocks


def metric_name(key: str) -> str:
    """Row label of a metric in the per-benchmark tables.

    >>> metric_name("format_rate"), metric_name("length_tokens_p90"), metric_name("maj@4")
    ('format rate (%)', 'length tokens p90', 'maj@4 (%)')
    """
    if key.startswith(PERCENT_PREFIXES):
        return key.replace("_", " ") + " (%)"
    return {"num_items": "items", "num_samples": "samples per item"}.get(key, key.replace("_", " "))


def benchmark_blocks(entries: list[dict], bench: str, plot_dir: Path) -> list[tuple]:
    # Metrics as rows and models as columns: a table stays narrow however many pass@k/maj@k there are.
    keys = [k for k in metric_keys(entries, bench) if k != "pass@1"]
    headers = ["metric", *(e["label"] for e in entries)]
    rows = [["pass@1 ± s.e. (%)", *(pass1_cell(e["results"].get(bench)) for e in entries)]]
    for k in keys:
        rows.append([metric_name(k), *(fmt(k, (e["results"].get(bench) or {}).get(k)) for e in entries)])
    if any(e.get("parameters") for e in entries):  # a distilled student next to its teacher, by size
        rows.append(["parameters", *(_count(e.get("parameters")) for e in entries)])
    blocks: list[tuple] = [("h2", f"Benchmark: {bench}"), ("table", headers, rows)]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", bench)
    for plot, name, caption in ((plot_pass_k, "passk", "pass@k (solid) and maj@k (dashed)"),
                                (plot_lengths, "lengths", "completion lengths, correct vs incorrect")):  # fmt: skip
        png = plot(entries, bench, plot_dir / f"{slug}_{name}.png")
        if png is not None:
            blocks.append(("img", png, f"{bench}: {caption}"))
    return blocks


def _clip(text: str, limit: int = _SAMPLE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit // 3] + f"\n[... {len(text) - limit} characters cut ...]\n" + text[-2 * limit // 3:]


def sample_blocks(entry: dict, bench: str, per_kind: int) -> list[tuple]:
    """A few correct and incorrect samples of one model on one benchmark (first ones in item order)."""
    items = entry["details"].get(bench) or []
    blocks: list[tuple] = []
    for want, title in ((True, "correct"), (False, "incorrect")):
        # One sample per item, so the few shown cover different problems.
        picked = [(it, it["correct"].index(want)) for it in items if want in it["correct"]][:per_kind]
        for it, j in picked:
            extracted = (it.get("extracted") or [None] * (j + 1))[j]
            status = (it.get("status") or [None] * (j + 1))[j]
            blocks.append(("sample", {
                "title": f"{bench} · {it['id']} · {title}", "ok": want, "prompt": _clip(it.get("prompt") or ""),
                "completion": _clip(it["completions"][j]), "gold": it.get("gold"), "extracted": extracted,
                "status": status, "stderr": ((it.get("stderr") or [""] * (j + 1))[j] or "")[-400:],
            }))  # fmt: skip
    return blocks


def build_blocks(entries: list[dict], run_rows: list[dict] | None, plot_dir: Path, samples: int) -> list[tuple]:
    benches: list[str] = []
    for e in entries:
        benches += [b for b in e["results"] if b not in benches]
    models = [f"{e['label']} ({e['path']}{'; ' + _count(e['parameters']) + ' parameters' if e.get('parameters') else ''})"
              for e in entries]
    blocks: list[tuple] = [("h1", "Evaluation report"), ("p", "Models: " + "; ".join(models))]
    blocks += summary_blocks(entries, benches, plot_dir)
    for b in benches:
        blocks += benchmark_blocks(entries, b, plot_dir)
    if run_rows:
        png = plot_training(run_rows, plot_dir / "training.png")
        if png is not None:
            blocks += [("h2", "Training curves"), ("img", png, f"{len(run_rows)} logged steps")]
    if samples:
        blocks.append(("h2", f"Samples ({entries[-1]['label']})"))
        for b in benches:
            blocks += sample_blocks(entries[-1], b, samples)
    return blocks


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _fence(text: str) -> str:
    ticks = "````" if "```" in text else "```"
    return f"{ticks}\n{text}\n{ticks}"


def render_md(blocks: list[tuple], root: Path) -> str:
    out = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + block[1])
        elif kind == "p":
            out.append(block[1])
        elif kind == "table":
            headers, rows = block[1], block[2]
            out.append("\n".join(["| " + " | ".join(map(_md_cell, headers)) + " |", "|" + "---|" * len(headers)]
                                 + ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows]))  # fmt: skip
        elif kind == "img":
            out.append(f"![{block[2]}]({block[1].relative_to(root).as_posix()})")
        elif kind == "sample":
            s = block[1]
            meta = f"gold `{s['gold']}` · extracted `{s['extracted']}`" if s["gold"] is not None else f"sandbox: {s['status']}"
            out.append(f"#### {s['title']}\n\n{meta}\n\nPrompt:\n\n{_fence(s['prompt'])}\n\nCompletion:\n\n{_fence(s['completion'])}")
    return "\n\n".join(out) + "\n"


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem auto;max-width:1180px;color:#1d2330;
padding:0 1rem;line-height:1.45}
h1{font-size:1.7rem;border-bottom:3px solid #1f77b4;padding-bottom:.3rem}h2{margin-top:2.2rem;font-size:1.3rem;
border-bottom:1px solid #d5dbe5;padding-bottom:.2rem}p{color:#3b4458}
table{border-collapse:collapse;margin:.8rem 0;font-size:.88rem}th,td{border:1px solid #d5dbe5;padding:.3rem .6rem;
text-align:right}th{background:#eef2f8}td:first-child,th:first-child{text-align:left;font-weight:600}
tr:nth-child(even) td{background:#f8fafc}td.pos{color:#17803d}td.neg{color:#b42318}
figure{margin:1rem 1.2rem 1rem 0;display:inline-block;vertical-align:top}figure img{max-width:100%;border:1px solid #e3e7ee;border-radius:4px}
figcaption{font-size:.8rem;color:#5b6475}
.sample{border:1px solid #d5dbe5;border-left:6px solid #2ca02c;border-radius:4px;margin:1rem 0;padding:.5rem .9rem}
.sample.bad{border-left-color:#d62728}.sample h4{margin:.2rem 0 .4rem;font-size:.95rem}
.meta{font-size:.85rem;color:#3b4458}pre{background:#f6f8fa;padding:.6rem;overflow-x:auto;font-size:.78rem;
white-space:pre-wrap;word-break:break-word;max-height:22rem;overflow-y:auto;border-radius:4px}
"""


def _html_cell(text: str, tag: str) -> str:
    cls = ""
    if tag == "td" and re.match(r"^[+-]\d", str(text)) and not re.match(r"^[+-]0\.0 ", str(text)):
        cls = ' class="pos"' if str(text).startswith("+") else ' class="neg"'
    return f"<{tag}{cls}>{html.escape(str(text))}</{tag}>"


def _html_block(block: tuple) -> str:
    kind = block[0]
    if kind in ("h1", "h2", "h3", "p"):
        return f"<{kind}>{html.escape(block[1])}</{kind}>"
    if kind == "table":
        head = "".join(_html_cell(h, "th") for h in block[1])
        body = "".join("<tr>" + "".join(_html_cell(c, "td") for c in row) + "</tr>" for row in block[2])
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if kind == "img":
        data = base64.b64encode(block[1].read_bytes()).decode()
        return (f'<figure><img alt="{html.escape(block[2])}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(block[2])}</figcaption></figure>")  # fmt: skip
    s = block[1]
    meta = (f"gold <code>{html.escape(str(s['gold']))}</code> · extracted <code>{html.escape(str(s['extracted']))}</code>"
            if s["gold"] is not None else f"sandbox: <code>{html.escape(str(s['status']))}</code>")  # fmt: skip
    err = f"<pre>{html.escape(s['stderr'])}</pre>" if s.get("stderr") else ""
    return (f'<div class="sample{"" if s["ok"] else " bad"}"><h4>{html.escape(s["title"])}</h4><div class="meta">{meta}</div>'
            f'<details{" open" if len(s["prompt"]) < 300 else ""}><summary>prompt</summary><pre>{html.escape(s["prompt"])}</pre></details>'
            f'<pre>{html.escape(s["completion"])}</pre>{err}</div>')  # fmt: skip


def render_html(blocks: list[tuple]) -> str:
    body = "\n".join(_html_block(b) for b in blocks)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>r1kit evaluation report</title>'
            f"<style>{_CSS}</style></head><body>\n{body}\n</body></html>\n")  # fmt: skip


def write_report(out: Path, dirs: list[tuple[str, Path]], run_dir: str | Path | None = None, samples: int = 2) -> dict:
    """Write `out/report.md`, `out/report.html` and `out/plots/*.png`; returns their paths."""
    if not dirs:
        raise UserError("nothing to report: give at least one eval output directory.")
    entries = [load_entry(label, Path(p)) for label, p in dirs]
    run_rows = read_run_metrics(Path(run_dir)) if run_dir else None
    ensure_output_dir(out, "output")
    blocks = build_blocks(entries, run_rows, out / "plots", samples)
    (out / "report.md").write_text(render_md(blocks, out), encoding="utf-8")
    (out / "report.html").write_text(render_html(blocks), encoding="utf-8")
    plots = [b[1] for b in blocks if b[0] == "img"]
    return {"md": out / "report.md", "html": out / "report.html", "plots": plots}


def report_cli(argv: list[str]) -> int:
    """`r1kit eval report --results DIR [DIR ...] --output DIR [--run_dir RUN] [--samples N]`."""
    import argparse

    parser = argparse.ArgumentParser(prog="r1kit eval report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", nargs="+", required=True, help="eval output directories (with results.json)")
    parser.add_argument("--labels", nargs="+", help="names for them in the report (default: their run label or folder)")
    parser.add_argument("--output", required=True, help="where report.md, report.html and plots/ go")
    parser.add_argument("--run_dir", help="a training run directory with metrics.jsonl (training curves)")
    parser.add_argument("--samples", type=int, default=2, help="correct and incorrect samples shown per benchmark")
    args = parser.parse_args(argv)
    ensure_output_dir(Path(args.output), "--output")
    if args.samples < 0:
        raise UserError(f"--samples {args.samples}: give a count of samples, 0 or more.")
    if args.labels and len(args.labels) != len(args.results):
        raise UserError(f"--labels gives {len(args.labels)} names for {len(args.results)} --results directories.")
    labels = args.labels or [dir_label(Path(d)) for d in args.results]
    paths = write_report(Path(args.output), list(zip(labels, map(Path, args.results))), args.run_dir, args.samples)
    print(f"report: {paths['html']} ({paths['md'].name}, {len(paths['plots'])} plots)")
    return 0


def dir_label(path: Path) -> str:
    info = path / "run_info.json"
    return json.loads(info.read_text())["label"] if info.is_file() else path.name
