"""The `hf` engine's sampling on an MLA (DeepSeek-V3 style) model: absorbed attention vs transformers' own.

Same prompts, same seed, both paths in one process; prints seconds per `generate` call (median of --repeats
after one warm-up) and checks that greedy decoding gives identical tokens.

    python benchmarks/mla_sampling.py                      # build_tiny's MoE policy, untrained
    python benchmarks/mla_sampling.py --policy <dir> --rows 128 --tokens 48
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from r1kit.errors import UserError, exit_on_user_error
from r1kit.generation import HFEngine, SamplingSettings
from r1kit.generation.mla import mla_layers


def timed(engine: HFEngine, prompts: list[list[int]], sampling: SamplingSettings, absorbed: bool, repeats: int):
    engine.absorbed_mla = absorbed
    times, out = [], None
    for i in range(repeats + 1):
        torch.manual_seed(0)
        start = time.perf_counter()
        out = engine.generate(prompts, sampling)
        if i:  # the first call warms allocators
            times.append(time.perf_counter() - start)
    return (statistics.median(times) if times else 0.0), out


@exit_on_user_error
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", help="an MLA model directory (default: build_tiny's MoE policy in a temp dir)")
    p.add_argument("--rows", type=int, default=128, help="completions per call (16 prompts x 8 by default)")
    p.add_argument("--group", type=int, default=8, help="completions per distinct prompt")
    p.add_argument("--tokens", type=int, default=48, help="max new tokens")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if a.policy:
        policy = Path(a.policy)
        if not (policy / "config.json").is_file():
            raise UserError(f"--policy {policy}: no model there (expected a directory with config.json)")
    else:
        from r1kit.tiny import build_tiny

        policy = build_tiny(Path(tempfile.mkdtemp(prefix="r1kit_mla_")), seed=0).policy
    model = AutoModelForCausalLM.from_pretrained(policy).eval()
    if not mla_layers(model):
        raise UserError(f"{policy} has no MLA attention layers this path understands (DeepSeek-V3 style)")
    tokenizer = AutoTokenizer.from_pretrained(policy)
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(8, 30, (a.rows // a.group,), generator=g)
    prompts = [torch.randint(5, len(tokenizer), (int(n),), generator=g).tolist() for n in lengths]
    prompts = [q for q in prompts for _ in range(a.group)]
    engine = HFEngine(model, tokenizer)
    engine.eos_id = -1  # fixed-length rows: both paths do the same number of decode steps
    greedy = SamplingSettings(a.tokens, greedy=True)
    ref, ours = timed(engine, prompts, greedy, False, 0)[1], timed(engine, prompts, greedy, True, 0)[1]
    same = sum(x == y for x, y in zip(ref.completion_ids, ours.completion_ids))
    sampled = SamplingSettings(a.tokens, temperature=1.0)
    t_ref, _ = timed(engine, prompts, sampled, False, a.repeats)
    t_ours, _ = timed(engine, prompts, sampled, True, a.repeats)
    print(f"{policy}: {a.rows} rows x {a.tokens} tokens, {a.threads} threads")
    print(f"greedy rows identical: {same}/{len(prompts)}")
    print(f"transformers attention {t_ref:.3f} s   absorbed MLA {t_ours:.3f} s   ratio {t_ours / t_ref:.2f}")


if __name__ == "__main__":
    main()
