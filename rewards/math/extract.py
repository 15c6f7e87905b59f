"""Find the final answer inside a model completion.

Every search here is a linear scan (``str.rfind`` plus one balanced-brace walk), so extraction is safe
to run in the calling process even on a 1 MB completion; only the sympy stage needs a worker process.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from r1kit.errors import UserError

ANSWER_SOURCES = ("answer_tag", "boxed", "final_answer", "gsm8k")
"""Default priority: the first source that finds something wins. An explicit ``<answer>`` tag is the
format the policy is trained to emit, so it beats a ``\\boxed{}`` written mid-thought; "final answer
is" and GSM8K's ``####`` are fallbacks for few-shot style outputs."""

# No real final answer is this long; the cap keeps the pure-Python brace scan (run in the caller,
# outside any deadline) to a few milliseconds on a megabyte of output.
MAX_ANSWER_CHARS = 10_000
_FINAL_ANSWER_RE = re.compile(r"final answer\s*(?:is|:)", re.IGNORECASE)
_HOPE_RE = re.compile(r"\.?\s*I hope it is correct\.?\s*$", re.IGNORECASE)


def _balanced_content(text: str, open_pos: int) -> str | None:
    """Content of the ``{...}`` group opening at ``text[open_pos]``; None if it is not closed within
    `MAX_ANSWER_CHARS`. Backslash-escaped braces (``\\{``) are literal and do not count."""
    depth = 0
    i = open_pos
    n = min(len(text), open_pos + MAX_ANSWER_CHARS + 2)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[open_pos + 1 : i]
        i += 1
    return None


def last_boxed(text: str) -> str | None:
    r"""Content of the last ``\boxed{...}`` or ``\fbox{...}`` (also the brace-less ``\boxed 5``).

    >>> last_boxed(r"so $\boxed{\frac{1}{2}}$, not \boxed{3}")
    '3'
    >>> last_boxed(r"\boxed 7.") is None, last_boxed(r"\boxed 7")
    (False, '7')
    """
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = start + (6 if text.startswith("\\boxed", start) else 5)
    if i < len(text) and text[i] == "{":
        return _balanced_content(text, i)
    if i < len(text) and text[i] == " ":
        # `\boxed 7` is valid LaTeX: the argument is the next token.
        token = text[i + 1 :].split(maxsplit=1)
        return token[0].rstrip(".$") if token else None
    return None


def _answer_tag(text: str) -> str | None:
    start = text.rfind("<answer>")
    if start < 0:
        return None
    end = text.find("</answer>", start)
    if end < 0:
        return None
    content = text[start + len("<answer>") : end]
    # `<answer>The answer is \boxed{5}</answer>`: the box is the answer, the prose is decoration.
    boxed = last_boxed(content)
    return boxed if boxed is not None else content


def _rest_of_line(text: str, start: int) -> str:
    end = text.find("\n", start)
    return text[start : end if end >= 0 else len(text)]


def _final_answer(text: str) -> str | None:
    # Scan only the tail: the phrase comes last, and a bounded window keeps this cheap on huge inputs.
    window_start = max(0, len(text) - 4000)
    matches = list(_FINAL_ANSWER_RE.finditer(text, window_start))
    if not matches:
        return None
    line = _HOPE_RE.sub("", _rest_of_line(text, matches[-1].end()).strip())
    if line.startswith("$"):
        # "The final answer is $x^2$. I hope ..." -> the math span only.
        close = line.find("$", 1)
        if close > 0:
            line = line[1:close]
    return line.rstrip(". ")


def _gsm8k(text: str) -> str | None:
    start = text.rfind("####")
    if start < 0:
        return None
    return _rest_of_line(text, start + 4)


_EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "answer_tag": _answer_tag,
    "boxed": last_boxed,
    "final_answer": _final_answer,
    "gsm8k": _gsm8k,
}


def extract_answer(completion: str, sources: tuple[str, ...] = ANSWER_SOURCES) -> str | None:
    r"""The final answer in ``completion``, or None when no source finds one.

    ``sources`` lists where to look, highest priority first (default `ANSWER_SOURCES`):
    ``answer_tag`` (last ``<answer>...</answer>``; a ``\boxed{}`` inside it wins), ``boxed`` (last
    ``\boxed{}``/``\fbox{}``), ``final_answer`` ("final answer is ..." / "Final Answer: ..." to the end
    of the line) and ``gsm8k`` (text after the last ``####``).

    >>> extract_answer(r"<think>maybe \boxed{3}</think> <answer>\boxed{4}</answer>")
    '4'
    >>> extract_answer("The final answer is $\\frac{1}{2}$. I hope it is correct.")
    '\\frac{1}{2}'
    >>> extract_answer("She pays 3 * 4 = 12\n#### 12")
    '12'
    >>> extract_answer("no answer here") is None
    True
    """
    unknown = [s for s in sources if s not in _EXTRACTORS]
    if unknown:
        raise UserError(f"unknown answer source(s) {unknown}; choose from {list(_EXTRACTORS)}")
    for source in sources:
        found = _EXTRACTORS[source](completion)
        if found is not None and found.strip():
            return found.strip()
    return None
