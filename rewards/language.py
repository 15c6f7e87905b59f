"""Language-consistency reward (DeepSeek-R1, Sec. 2.3.3): the share of the chain-of-thought written in
the target language, to discourage the language mixing that RL otherwise induces.

Languages are told apart by script, which separates English from Chinese/Japanese/Korean reliably
without a language-ID model. A Latin-script word counts as one unit; each CJK character counts as
one unit (CJK text has no spaces, and one character is roughly one word). Math, LaTeX commands, code
identifiers after a backslash and digits are not language and are ignored.
"""

from __future__ import annotations

import re
from typing import Any

from r1kit.errors import UserError
from rewards.common import completion_text
from rewards.registry import register

_LATIN_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")
_SCRIPT_RE = {
    "han": re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"),
    "kana": re.compile(r"[\u3040-\u30ff]"),
    "hangul": re.compile(r"[\uac00-\ud7af\u1100-\u11ff]"),
    "cyrillic_word": re.compile(r"[\u0400-\u04ff]{2,}"),
}
_MATH_RE = re.compile(r"\$\$.*?\$\$|\$[^$]*\$|\\\(.*?\\\)|\\\[.*?\\\]", re.DOTALL)

# Which script units count as the target language.
TARGET_SCRIPTS = {
    "en": ("latin",),
    "zh": ("han",),
    "ja": ("han", "kana"),
    "ko": ("hangul",),
    "ru": ("cyrillic_word",),
}


def script_units(text: str) -> dict[str, int]:
    """Count language units per script, math spans removed.

    >>> script_units("We need $x^2$ 的值")
    {'latin': 2, 'han': 2, 'kana': 0, 'hangul': 0, 'cyrillic_word': 0}
    """
    text = _MATH_RE.sub(" ", text)
    counts = {"latin": len(_LATIN_WORD_RE.findall(text))}
    counts.update({script: len(regex.findall(text)) for script, regex in _SCRIPT_RE.items()})
    return counts


def chain_of_thought(text: str) -> str:
    """The thought: text inside ``<think>...</think>``, or before ``</think>`` when the template
    pre-filled ``<think>``, or the whole text when there are no tags."""
    end = text.find("</think>")
    start = text.find("<think>")
    if end < 0:
        return text[start + len("<think>") :] if start >= 0 else text
    return text[start + len("<think>") if 0 <= start < end else 0 : end]


def target_share(text: str, target: str) -> float | None:
    """Share of language units in ``target``; None if the text has no language units at all.

    >>> target_share("First compute 2+2, 然后 check.", "en")
    0.6
    """
    counts = script_units(text)
    total = sum(counts.values())
    if total == 0:
        return None
    return sum(counts[s] for s in TARGET_SCRIPTS[target]) / total


@register("language_consistency")
def language_consistency_reward(
    completions: list, *, target: str = "en", **columns: Any
) -> list[float | None]:
    """Share of the chain-of-thought in the ``target`` language (en, zh, ja, ko, ru); None (skip) for
    a thought with no words, e.g. pure arithmetic.

    >>> language_consistency_reward(["<think>So x is 3.</think>3", "<think>所以 x 是 3</think>3"])
    [1.0, 0.0]
    """
    if target not in TARGET_SCRIPTS:
        raise UserError(
            f"language_consistency: target must be one of {sorted(TARGET_SCRIPTS)}, got {target!r}"
        )
    return [target_share(chain_of_thought(completion_text(c)), target) for c in completions]
