"""Generation prompts through the tokenizer's chat template, shared by GRPO, SFT and evaluation.

One function builds the text every stage samples from, so a policy is trained (SFT, GRPO) and
scored (evals) on exactly the same prompt format: same system prompt, same R1 `<think>` prefill.
"""

from __future__ import annotations

from typing import Any

from r1kit.errors import UserError


def generation_prompt(prompt: Any, tokenizer, system_prompt: str | None = None, prefill_think: bool = False) -> str:
    """Chat-template a prompt (a string or a list of chat messages) and open the assistant turn.

    With `prefill_think` the text ends with `<think>\\n` (R1's prefill), also for templates that
    ignore the `prefill_think` template variable.
    """
    messages = list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
    if system_prompt:
        messages = [{"role": "system", "content": system_prompt}] + messages
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                         prefill_think=prefill_think)
    if prefill_think and not text.rstrip().endswith("<think>"):
        text += "<think>\n"
    return text


def encode_prompt(prompt: Any, tokenizer, system_prompt: str | None = None, prefill_think: bool = False) -> list[int]:
    """Token ids of `generation_prompt` (the template already holds any bos token)."""
    text = generation_prompt(prompt, tokenizer, system_prompt, prefill_think)
    return tokenizer(text, add_special_tokens=False).input_ids


def encode_prompts(rows: list[dict], tokenizer, max_length: int, source: str, system_prompt: str | None = None,
                   prefill_think: bool = False) -> list[list[int]]:
    """`encode_prompt` for every row's `prompt`; a prompt over `max_length` tokens is a user error."""
    out = []
    for i, row in enumerate(rows):
        ids = encode_prompt(row["prompt"], tokenizer, system_prompt, prefill_think)
        if len(ids) > max_length:
            raise UserError(
                f"prompt {i} of '{source}' is {len(ids)} tokens, over max_prompt_length={max_length}: "
                "raise max_prompt_length or filter long rows out of the data."
            )
        out.append(ids)
    return out
