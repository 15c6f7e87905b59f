"""Tiny models built offline: a BPE tokenizer, a DeepSeek-V3-style MoE policy and a dense student.

    r1kit build-tiny --out runs/tiny     # runs/tiny/{tokenizer,policy,student}

Every directory is written by `save_pretrained`, so later stages load it by path exactly as a hub
model (`AutoModelForCausalLM.from_pretrained("tiny/policy")`, `AutoTokenizer.from_pretrained(...)`).

Choices and why:
- Tokenizer: byte-level BPE trained on the synthetic corpus (any text round-trips; no unknown
  tokens on GSM8K/MATH prompts), digits split one per token so numbers are read digit by digit.
  `<think>`, `</think>`, `<answer>`, `</answer>` are ordinary added tokens, so
  `decode(..., skip_special_tokens=True)` keeps them for the format rewards; bos/eos/pad and the role
  markers are special. The chat template accepts `prefill_think=True`, which ends the generation
  prompt with `<think>\\n` (R1's prefill).
- Policy: `DeepseekV3Config` MoE - MLA attention with kv_lora_rank 512 and qk_rope_head_dim 64 (the
  dims vLLM's CPU MLA kernels accept), first layer dense, then 1 shared + 8 routed experts, sigmoid
  top-2 routing with `e_score_correction_bias` (noaux_tc). Nope/v head dims of 32 keep it near 2.1M
  parameters (nope 16 fails to load in vLLM's CPU backend, 32 loads). Weights start at std
  ~1/sqrt(hidden) (see POLICY_INIT_STD). No multi-token-prediction layers (R1's post-training does not
  use them).
- Student: dense Qwen3 (0.41M) with under half the policy's parameters, same tokenizer (distillation
  target). head_dim 32: vLLM's CPU attention rejects 24.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from r1kit import synth
from r1kit.errors import UserError

REASONING_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
ROLES = ("system", "user", "assistant")
SPECIAL_TOKENS = [BOS, EOS, PAD] + [f"<|{r}|>" for r in ROLES]
VOCAB_SIZE = 768  # small vocab: the embedding matrix stays a small share of a ~1M-parameter model
MAX_POSITIONS = 1024
# Weight init std ~ 1/sqrt(hidden size). The hub default 0.02 suits hidden sizes in the thousands; at
# hidden 128 it makes MLA's attention logits (no QK-norm) start tiny, and the policy then took over 600
# steps to learn to copy the question's numbers instead of about 100.
POLICY_INIT_STD = 0.08
STUDENT_INIT_STD = 0.1

# ChatML-like: `<|bos|><|user|>\n...<|eos|><|assistant|>\n...<|eos|>`. The assistant turn ends with
# eos, so generation stops there. `{% generation %}` marks assistant tokens for TRL's
# assistant-only loss (return_assistant_tokens_mask).
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{- raise_exception('roles must be system, user or assistant, not ' + message['role']) -}}"
    "{%- endif -%}"
    "{{- '<|' + message['role'] + '|>\\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{% generation %}{{- message['content'] + eos_token -}}{% endgeneration %}"
    "{%- else -%}"
    "{{- message['content'] + eos_token -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|assistant|>\\n' -}}"
    "{%- if prefill_think is defined and prefill_think -%}{{- '<think>\\n' -}}{%- endif -%}"
    "{%- endif -%}"
)


@dataclass(frozen=True)
class TinyPaths:
    tokenizer: Path
    policy: Path
    student: Path


def tokenizer_corpus(seed: int, per_task: int = 150) -> list[str]:
    """Texts the BPE merges are learned from: every task and difficulty, plain and chat-formatted."""
    texts = []
    for task in synth.TASKS:
        for difficulty in synth.DIFFICULTIES:
            for row in synth.generate(task, per_task, seed, difficulty):
                texts.append(synth.pretrain_text(row))
                texts.append(row["prompt"] + "\n" + synth.format_completion(row))
    return texts


def train_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE):
    """Byte-level BPE with single-digit tokens, wrapped as a transformers fast tokenizer."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\d"), behavior="isolated"),  # 47 -> 4, 7: digit-level arithmetic
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(REASONING_TAGS),
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in REASONING_TAGS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=SPECIAL_TOKENS[3:],
        chat_template=CHAT_TEMPLATE,
        model_max_length=MAX_POSITIONS,
        padding_side="left",  # generation batches are left-padded; training code pads explicitly
    )


def _token_ids(tokenizer) -> dict:
    return {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def policy_config(tokenizer):
    from transformers import DeepseekV3Config

    return DeepseekV3Config(
        **_token_ids(tokenizer),
        hidden_size=128,
        intermediate_size=384,  # the dense first layer
        moe_intermediate_size=64,
        num_hidden_layers=3,
        first_k_dense_replace=1,
        num_attention_heads=8,  # 8 rather than 4: more heads to look up the operands' digits
        num_key_value_heads=8,
        kv_lora_rank=512,  # fixed by vLLM's CPU MLA kernels (latent 512 + rope 64 = 576 head size)
        qk_rope_head_dim=64,
        q_lora_rank=None,  # plain q_proj: a low-rank query saves nothing at hidden 128
        qk_nope_head_dim=32,  # 16 fails in vLLM CPU's MLA weight packing ("invalid weight input features")
        v_head_dim=32,
        n_shared_experts=1,
        n_routed_experts=8,
        num_experts_per_tok=2,
        n_group=1,
        topk_group=1,
        # V3's 2.5 compensates for picking 8 of 256 narrow experts; with normalised top-2 weights
        # summing to 1 the routed output is already on the scale of a dense MLP.
        routed_scaling_factor=1.0,
        norm_topk_prob=True,
        # Read by vLLM's DeepSeek implementation; transformers hard-codes this routing.
        topk_method="noaux_tc",
        scoring_func="sigmoid",
        num_mtp_layers=0,
        max_position_embeddings=MAX_POSITIONS,
        # Untied: vLLM's DeepSeek-V2/V3 ignores tie_word_embeddings and would leave its lm_head unloaded
        # (uniform logits); untying costs vocab x hidden (48k) parameters.
        tie_word_embeddings=False,
        initializer_range=POLICY_INIT_STD,
        dtype="float32",
    )


def student_config(tokenizer):
    from transformers import Qwen3Config

    return Qwen3Config(
        **_token_ids(tokenizer),
        hidden_size=96,
        intermediate_size=256,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,  # vLLM CPU attention rejects 24 ("Unsupported CPU attention configuration")
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        initializer_range=STUDENT_INIT_STD,
        dtype="float32",
    )


def param_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _save(model, tokenizer, path: Path) -> None:
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)  # so the directory loads like a hub model


def build_tiny(out_dir: str | Path, seed: int = 0) -> TinyPaths:
    """Write `out_dir/{tokenizer,policy,student}`; same seed, same weights and vocabulary."""
    import torch
    from transformers import AutoModelForCausalLM

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}' exists and is not a directory; choose a directory path.")
    paths = TinyPaths(out / "tokenizer", out / "policy", out / "student")
    tokenizer = train_tokenizer(tokenizer_corpus(seed))
    tokenizer.save_pretrained(paths.tokenizer)
    torch.manual_seed(seed)
    policy = AutoModelForCausalLM.from_config(policy_config(tokenizer), dtype=torch.float32)
    student = AutoModelForCausalLM.from_config(student_config(tokenizer), dtype=torch.float32)
    if param_count(student) * 2 > param_count(policy):
        raise AssertionError("student config must stay under half the policy's parameters")
    _save(policy, tokenizer, paths.policy)
    _save(student, tokenizer, paths.student)
    return paths


def cli_build_tiny(argv: list[str]) -> int:
    """`r1kit build-tiny --out DIR [--seed S]`."""
    parser = argparse.ArgumentParser(
        prog="r1kit build-tiny",
        description="Build the tiny tokenizer, DeepSeek-V3-style MoE policy and dense Qwen3 student offline.",
    )
    parser.add_argument("--out", required=True, help="output directory (tokenizer/, policy/, student/ go inside)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the tokenizer corpus and the weights")
    args = parser.parse_args(argv)
    paths = build_tiny(args.out, seed=args.seed)
    print(describe(paths))
    return 0


def describe(paths: TinyPaths) -> str:
    """One line per artifact with its size, as a user would want to see after building."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(paths.tokenizer)
    lines = [f"tokenizer  {paths.tokenizer}  vocab {len(tok)}"]
    for name in ("policy", "student"):
        path = getattr(paths, name)
        config = AutoConfig.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path)
        lines.append(f"{name:<10} {path}  {config.model_type}  {param_count(model) / 1e6:.2f}M parameters")
    return "\n".join(lines)
