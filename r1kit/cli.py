"""`r1kit`: one command for every stage.

    r1kit build-tiny --out tiny                          # tokenizer + MoE policy + dense student
    r1kit pretrain --config recipes/tiny/pretrain.yaml   # give the tiny base arithmetic skills
    r1kit grpo --config recipes/tiny/grpo.yaml --learning_rate 1e-5

Training stages are plain modules, so `accelerate launch -m rl.grpo --config ...` runs the same
code on several processes; `r1kit grpo ...` is the one-process shortcut. Subcommands are imported
only when called, so `r1kit --help` is instant.
"""

from __future__ import annotations

import importlib
import sys

from r1kit.errors import exit_on_user_error, UserError

# name -> (target "module:function" taking argv, one-line summary). Each target handles --help.
COMMANDS: dict[str, tuple[str | None, str]] = {
    "build-tiny": ("r1kit.tiny:cli_build_tiny", "build the tiny tokenizer, MoE policy and dense student offline"),
    "data": ("r1kit.cli:data_cli", "synthetic task files (`data synth`) and the benchmark registry (`data list`)"),
    "pretrain": ("sft.pretrain:main", "causal-LM pretraining of a tiny base on the synthetic corpus"),
    "sft": ("sft.sft:main", "cold-start SFT on <think> traces (accelerate launch -m sft.sft)"),
    "grpo": ("rl.grpo:main", "GRPO with verifiable rewards (accelerate launch -m rl.grpo)"),
    "distill": ("sft.distill:main", "distil verified teacher traces (or logits) into a dense student"),
    "eval": ("evals.evaluate:main", "evaluate models or a predictions file on math and code benchmarks, with a report"),
    "run": ("r1kit.pipeline:cli_run", "the whole pipeline in one command (`r1kit run RECIPE [--dry_run]`)"),
    "sandbox": ("rewards.sandbox:sandbox_cli", "run a program in the local code sandbox (`sandbox run FILE`)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return (
        "usage: r1kit <command> [options]   (r1kit <command> --help for its options)\n\n"
        "commands:\n" + "\n".join(lines)
    )


def _call(target: str, argv: list[str]) -> int:
    module, _, func = target.partition(":")
    rc = getattr(importlib.import_module(module), func)(argv)
    return int(rc or 0)


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from importlib.metadata import version

        print(f"r1kit {version('r1kit')}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise UserError(f"unknown command '{name}'.{hint}\n{usage()}")
    target, summary = COMMANDS[name]
    if target is None:
        print(f"r1kit {name}: {summary} -- not implemented yet in this version.", file=sys.stderr)
        return 1
    return _call(target, rest)


def data_cli(argv: list[str]) -> int:
    """`r1kit data synth ...` writes a synthetic split; `r1kit data list` shows the benchmark registry."""
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: r1kit data synth --task T --n N --seed S --out FILE [--difficulty D] [--split train|test]\n"
              "       r1kit data list      # registered benchmarks: hub ids and local files")
        return 0
    sub, rest = argv[0], argv[1:]
    if sub == "synth":
        return _call("r1kit.synth:cli_synth", rest)
    if sub == "list":
        from r1kit.data import BENCHMARKS, DATA_DIR_ENV

        for b in BENCHMARKS.values():
            local = ", ".join(f"{s}={p}" for s, p in b.local.items())
            print(f"{b.name:<11} {b.kind:<5} hub={b.hub_id or '-'}  local (under ${DATA_DIR_ENV}): {local}")
        return 0
    raise UserError(f"unknown `r1kit data` subcommand '{sub}'; use `synth` or `list`.")


if __name__ == "__main__":
    sys.exit(main())
