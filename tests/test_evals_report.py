"""Evaluation with models (tiny, built here) and the report: generation, resume, LoRA, several models,
training curves; the HTML parses, its numbers equal results.json, plots are non-empty PNGs."""

from __future__ import annotations

import html.parser
import json
import re
import shutil
import subprocess

import pytest

from evals import generate
from evals.evaluate import main as eval_main
from evals.report import fmt, write_report
from r1kit.errors import UserError

TINY = ["--benchmark", "synthetic:arithmetic", "--max_samples", "3", "--n", "2", "--max_new_tokens", "6",
        "--temperature", "1.0", "--report_samples", "1"]  # fmt: skip


class _Tables(html.parser.HTMLParser):
    """Rows of every <table> and the sources of every <img>; fails on unbalanced tags."""

    def __init__(self):
        super().__init__()
        self.tables, self.images, self.stack, self._cell = [], [], [], None

    def handle_starttag(self, tag, attrs):
        if tag in ("meta", "img", "br"):
            if tag == "img":
                self.images.append(dict(attrs)["src"])
            return
        self.stack.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}> after {self.stack[-3:]}"
        self.stack.pop()
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self._cell)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


@pytest.fixture
def no_report(monkeypatch):
    """For tests of generation and resume: the report (drawn and checked by the tests on `two_models`)
    is the slow part of an eval call on tiny models, so these calls skip drawing it."""
    from evals import evaluate

    monkeypatch.setattr(evaluate, "write_report", lambda out, *a, **k: {"html": out / "report.html", "md": out / "report.md", "plots": []})


@pytest.fixture(scope="module")
def two_models(tiny_dir, tmp_path_factory, few_threads):
    """Policy and student of the tiny build evaluated together, with a fake training run beside them."""
    out = tmp_path_factory.mktemp("eval")
    run = out / "run"
    run.mkdir()
    rows = [{"step": s, "time": 0.0, "reward": 0.1 * s, "rewards/accuracy": 0.05 * s, "rewards/format": 0.2,
             "completion_length": 40 - s, "kl": 0.001 * s, "entropy": 1.0 / s, "clip_ratio/high": 0.01,
             "moe/layer1/max_over_mean": 1.5, "moe/layer2/max_over_mean": 1.2, "loss": 0.0}
            for s in range(1, 11)]  # fmt: skip
    rows[4]["eval/accuracy"] = 0.3
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = ["--model", str(tiny_dir / "policy"), str(tiny_dir / "student"), "--output", str(out / "cmp"),
            "--run_dir", str(run), *TINY]  # fmt: skip
    assert eval_main(argv) == 0
    return out / "cmp", argv


def test_several_models_each_get_results_details_and_generations(two_models):
    out, _ = two_models
    for label in ("policy", "student"):
        m = json.loads((out / label / "results.json").read_text())["synthetic:arithmetic"]
        assert m["num_items"] == 3 and m["num_samples"] == 2 and 0.0 <= m["pass@1"] <= 1.0
        assert m["length_tokens_max"] <= 6 and "truncation_rate" in m and "maj@2" in m
        gens = [json.loads(x) for x in (out / label / "generations" / "synthetic_arithmetic.jsonl").read_text().splitlines()]
        assert [len(g["completions"]) for g in gens] == [2, 2, 2] and all(len(g["num_tokens"]) == 2 for g in gens)
        details = (out / label / "details" / "synthetic_arithmetic.jsonl").read_text().splitlines()
        assert len(details) == 3 and "What is" in json.loads(details[0])["prompt"]


def test_report_html_parses_and_its_numbers_equal_the_json(two_models):
    out, _ = two_models
    page = (out / "report.html").read_text()
    parser = _Tables()
    parser.feed(page)
    assert not parser.stack
    summary = parser.tables[0]
    assert summary[0][:3] == ["benchmark", "policy pass@1", "student pass@1"]
    results = {label: json.loads((out / label / "results.json").read_text())["synthetic:arithmetic"]
               for label in ("policy", "student")}  # fmt: skip
    for col, label in ((1, "policy"), (2, "student")):
        m = results[label]
        assert summary[1][col] == f"{fmt('pass@1', m['pass@1'])} ± {fmt('pass@1_stderr', m['pass@1_stderr'])}"
    details = {label: [json.loads(x) for x in (out / label / "details" / "synthetic_arithmetic.jsonl").read_text().splitlines()]
               for label in ("policy", "student")}  # fmt: skip
    diffs = [sum(a["correct"]) / 2 - sum(b["correct"]) / 2 for a, b in zip(details["student"], details["policy"])]
    mean = sum(diffs) / len(diffs)
    paired = (sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs)) ** 0.5
    assert summary[1][3] == f"{100 * mean:+.1f} ± {100 * paired:.1f}"
    per_bench = {row[0]: row[1:] for row in parser.tables[1][1:]}
    for key in ("pass@2", "maj@2", "truncation_rate", "length_tokens_mean"):
        name = next(k for k in per_bench if k.startswith(key.replace("_", " ")))
        assert per_bench[name] == [fmt(key, results["policy"][key]), fmt(key, results["student"][key])]
    assert "Training curves" in page and "Samples (student)" in page
    assert len(parser.images) >= 4 and all(src.startswith("data:image/png;base64,") and len(src) > 2000 for src in parser.images)
    assert "src=\"plots/" not in page and "http" not in re.sub(r"<!DOCTYPE[^>]*>", "", page)  # self-contained


def test_report_markdown_and_pngs(two_models):
    out, _ = two_models
    md = (out / "report.md").read_text()
    pngs = sorted((out / "plots").glob("*.png"))
    assert {p.name for p in pngs} >= {"pass1.png", "training.png", "synthetic_arithmetic_passk.png",
                                      "synthetic_arithmetic_lengths.png"}  # fmt: skip
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
        assert f"](plots/{p.name})" in md
    assert "| benchmark | policy pass@1 | student pass@1 | Δ student vs policy |" in md


def test_rerun_resumes_per_item_and_refuses_other_settings(two_models, monkeypatch, no_report):
    out, argv = two_models
    gen_file = out / "student" / "generations" / "synthetic_arithmetic.jsonl"
    lines = gen_file.read_text().splitlines()
    gen_file.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # a crash mid-write of item 2
    calls = []
    real = generate._sample
    monkeypatch.setattr(generate, "_sample", lambda gen, cfg, rows, seed: calls.append([r["id"] for r in rows]) or real(gen, cfg, rows, seed))
    assert eval_main(argv) == 0
    # policy complete: no call; student: its one chunk again (items 2-3 missing), items 2-3 written
    assert calls == [["arithmetic-1-00000", "arithmetic-1-00001", "arithmetic-1-00002"]]
    new = gen_file.read_text().splitlines()
    assert new[0] == lines[0] and len(new) == 3 and new[1:] == lines[1:]  # same seeds: the same samples again
    with pytest.raises(UserError, match="other settings.*temperature"):
        eval_main(argv + ["--temperature", "0.7"])


def test_lora_adapter_directory_is_evaluated_on_its_base(tiny_dir, tmp_path, few_threads, no_report):
    from r1kit.modeling.loading import load_model
    from r1kit.modeling.lora import apply_lora, save_adapter

    base = load_model(str(tiny_dir / "student"))
    adapter = tmp_path / "adapter"
    save_adapter(apply_lora(base, 4, 8, 0.0, ["all-linear"]), adapter)  # no tokenizer saved: the base's is used
    assert eval_main(["--model", str(adapter), "--output", str(tmp_path / "o"), *TINY]) == 0
    assert json.loads((tmp_path / "o" / "results.json").read_text())["synthetic:arithmetic"]["num_items"] == 3


def test_report_subcommand_compares_existing_results(two_models, tmp_path):
    out, _ = two_models
    paths = write_report(tmp_path / "r", [("a", out / "policy"), ("b", out / "student")], samples=0)
    assert paths["html"].is_file() and "Δ b vs a" in paths["md"].read_text()
    with pytest.raises(UserError, match="no results.json"):
        write_report(tmp_path / "r", [("x", tmp_path)])


@pytest.mark.slow
def test_report_renders_in_a_browser_and_is_not_blank(two_models, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    out, _ = two_models
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--screenshot={shot}",
                    "--window-size=1280,2000", (out / "report.html").resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    colors = image.getcolors(maxcolors=1 << 20)
    assert image.size == (1280, 2000) and colors is not None and len(colors) > 50
    dominant = max(count for count, _ in colors)
    assert dominant < 0.97 * image.size[0] * image.size[1]  # not one colour: text, tables and plots drew


def test_training_checkpoint_folders_are_evaluated_by_their_model(tiny_dir, tmp_path, few_threads, no_report):
    ckpt = tmp_path / "grpo" / "checkpoint-3"
    shutil.copytree(tiny_dir / "student", ckpt / "model")
    (ckpt / "state").mkdir()
    out = tmp_path / "o"
    assert eval_main(["--model", str(ckpt), str(tiny_dir / "student"), "--output", str(out), *TINY]) == 0
    info = json.loads((out / "checkpoint-3" / "run_info.json").read_text())
    assert info["model"] == str(ckpt / "model") and (out / "student" / "results.json").is_file()
    with pytest.raises(UserError, match="model"):
        eval_main(["--model", str(tmp_path / "grpo"), "--output", str(out), *TINY])  # a run folder, not a model


@pytest.mark.vllm
def test_generation_through_the_vllm_engine(tiny_dir, tmp_path):
    """`.venv-vllm/bin/python -m pytest -m vllm tests/test_evals_report.py`: the same evaluation on vLLM."""
    pytest.importorskip("vllm")
    out = tmp_path / "o"
    assert eval_main(["--model", str(tiny_dir / "student"), "--engine", "vllm", "--output", str(out), *TINY]) == 0
    m = json.loads((out / "results.json").read_text())["synthetic:arithmetic"]
    assert m["num_items"] == 3 and m["num_samples"] == 2 and m["length_tokens_max"] <= 6
    gens = [json.loads(x) for x in (out / "generations" / "synthetic_arithmetic.jsonl").read_text().splitlines()]
    assert all(len(g["completions"]) == 2 and len(g["truncated"]) == 2 for g in gens)


def test_prompt_plus_new_tokens_must_fit_the_model(tiny_dir, tmp_path, few_threads):
    with pytest.raises(UserError, match="max_position_embeddings=1024; lower max_new_tokens"):
        eval_main(["--model", str(tiny_dir / "student"), "--output", str(tmp_path / "o"), *TINY, "--max_new_tokens", "5000"])


def test_parameter_counts_come_from_the_safetensors_headers(tiny_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    from evals.report import model_parameters

    for name in ("policy", "student"):
        model = AutoModelForCausalLM.from_pretrained(tiny_dir / name)
        stored = {t.data_ptr(): t for t in model.state_dict().values()}  # tied weights once, router biases too
        assert model_parameters(tiny_dir / name) == sum(t.numel() for t in stored.values())
    assert model_parameters(tmp_path) is None and model_parameters(tmp_path / "missing") is None
