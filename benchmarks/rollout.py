"""Rollout tokens/s of the generation engines on build-tiny's models, same prompts, one run; vLLM sync seconds.

    .venv-vllm/bin/python benchmarks/rollout.py --tiny runs/tiny            # both models, all engines
    python benchmarks/rollout.py --tiny runs/tiny --engines hf,hf-transformers   # without vLLM installed

Engines: `hf` (r1kit's own decode: absorbed MLA for the policy, the lean forward for the student),
`hf-transformers` (the same engine on transformers' forward and cache), `vllm` (colocated vllm.LLM; bf16
for the MLA policy on CPU, float32 otherwise). Every engine decodes exactly --tokens tokens per row
(EOS ignored), so tokens/s compare equal work. The vLLM row also times `sync_weights` (the push after an
optimizer step: a restart from the saved weights on CPU, in-place reload on CUDA) and reports it next to
the rollout time of the same batch. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from r1kit.generation import EngineSpec, HFEngine, SamplingSettings, build_engine


def prompts(tokenizer, n: int) -> list[list[int]]:
    from r1kit import synth

    rows = synth.generate("arithmetic", n, 0, 2, "test")
    chats = [[{"role": "user", "content": r["prompt"]}] for r in rows]
    return [list(tokenizer.apply_chat_template(c, add_generation_prompt=True, return_dict=True)["input_ids"])
            for c in chats]


def timed(engine, ps, sampling) -> tuple[float, int]:
    engine.generate(ps[:2], SamplingSettings(4, temperature=1.0, n=1, ignore_eos=True, seed=0))  # warm-up
    start = time.perf_counter()
    out = engine.generate(ps, sampling)
    return time.perf_counter() - start, sum(len(c) for c in out.completion_ids)


def make(name: str, model, tokenizer):
    if name == "hf":
        return HFEngine(model, tokenizer)
    if name == "hf-transformers":
        return HFEngine(model, tokenizer, absorbed_mla=False, lean=False)
    return build_engine(EngineSpec("vllm"), model, tokenizer)


def bench(path: str, engines: list[str], a) -> list[str]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    ps = prompts(tok, a.prompts)
    sampling = SamplingSettings(a.tokens, temperature=1.0, n=a.samples, ignore_eos=True, seed=0)
    lines = []
    for name in engines:
        engine = make(name, model, tok)
        seconds, tokens = timed(engine, ps, sampling)
        sync = ""
        if name == "vllm":
            times = []
            for _ in range(a.syncs):
                start = time.perf_counter()
                engine.sync_weights(model)
                times.append(time.perf_counter() - start)
            sync = f"{sum(times) / len(times):.2f} s ({engine.sync} ; {100 * sum(times) / len(times) / seconds:.0f}% of the rollout)"
            engine.close()
        lines.append(f"| {os.path.basename(path.rstrip('/'))} | {name} | {tokens} | {seconds:.2f} | {tokens / seconds:,.0f} | {sync} |")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tiny", required=True, help="`r1kit build-tiny` output directory")
    p.add_argument("--models", default="policy,student")
    p.add_argument("--engines", default="hf,hf-transformers,vllm")
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--samples", type=int, default=8, help="completions per prompt (n)")
    p.add_argument("--tokens", type=int, default=48, help="tokens decoded per completion")
    p.add_argument("--syncs", type=int, default=2, help="weight pushes timed for the vllm engine")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    print(f"{a.prompts} prompts x {a.samples} samples x {a.tokens} tokens, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), {'cuda' if torch.cuda.is_available() else 'cpu'}")
    print("| model | engine | tokens | seconds | tokens/s | vLLM sync per step |\n|---|---|---|---|---|---|")
    for m in a.models.split(","):
        bench(os.path.join(a.tiny, m), a.engines.split(","), a)


if __name__ == "__main__":  # vLLM starts worker machinery that re-imports the main module
    main()
