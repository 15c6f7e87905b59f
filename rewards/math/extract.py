"""Find the final answer inside a model completion.

Every search here is a linear scan (``str.rfind`` plus one balanced-brace walk), so extraction is safe
to run in the calling process even on a 1 MB completion; only the sympy stage needs a worker process.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from r1kit.errors import UserError
from rewards.math.normalize import numbers_close, term_value

ANSWER_SOURCES = ("answer_tag", "boxed", "final_answer", "gsm8k", "last_math")
"""Default priority: the first source that finds something wins. An explicit ``<answer>`` tag is the
format the policy is trained to emit, so it beats a ``\\boxed{}`` written mid-thought; "final answer
is" and GSM8K's ``####`` are fallbacks for few-shot style outputs; ``last_math`` (the last math span or
number of a prose answer) is the last resort, as in public graders' free-form extraction."""

# No real final answer is this long; the cap keeps the pure-Python brace scan (run in the caller,
# outside any deadline) to a few milliseconds on a megabyte of output.
MAX_ANSWER_CHARS = 10_000
# `10/3 = 3.33`: a rounded last term still agrees with the exact one before it.
_CHAIN_REL_TOL = 1e-4
_FINAL_ANSWER_RE = re.compile(r"final answer\s*(?:is|:)", re.IGNORECASE)
_HOPE_RE = re.compile(r"\.?\s*I hope it is correct\.?\s*$", re.IGNORECASE)
# Only the end of a completion holds its answer; bounding the scanned tail keeps every regex below cheap.
_TAIL_CHARS = 4000
# What may sit between the boxes of a multi-part answer (`\boxed{1} and \boxed{2}`): separators only, so
# a correction (`\boxed{10}, no wait, \boxed{12}`) keeps just the last box.
_BOX_GAP_RE = re.compile(r"^(?:\s|[,;$.]|\\[()\[\]]|\\q?quad|\\[,;!]|\\text\{\s*(?:and|or|,)?\s*\}|and\b|or\b)*$")
# Also a list: a decorative separator (`++++++`, `---`), or a few words ending in "and" between the parts
# of a multi-part answer (`\boxed{1} papers and \boxed{2} bins`, `\text{ for part (a) and }`); digits,
# `=` or a correction ("no wait") in the gap still keep only the last part.
# Each run is maximal (the lookahead), so a long failing gap cannot backtrack through ways to split it.
_JUNK_GAP_RE = re.compile(r"^\s*(?:([^\w\s\\{}$])\1+(?!\1)\s*)+$")
_WORDS_AND_GAP_RE = re.compile(r"^[A-Za-z() ]{0,40}\band\s*$")
_GAP_WRAPPER_RE = re.compile(r"\\text\w*\{|\\[()]|[}$]")
# A line break `\\` (the gap before `\\boxed` ends in its first backslash) separates parts too.
_LINE_BREAK_RE = re.compile(r"\\\\|\\$")
# `y_1 = \boxed{..} and y_2 = \boxed{..}`: the label in front of the next part is not part of the gap.
_NEXT_LABEL_RE = re.compile(r"(?:[A-Za-z](?:_\{?\w+\}?)?)\s*=\s*$")

# Math spans: `$$..$$`, `\[..\]` (may span lines), `$..$`, `\(..\)` (one line, as inline math must).
# `\$` is an escaped dollar sign, not a delimiter. Only the bounded tail is scanned, so an unclosed span costs
# at most a few million regex steps.
_MATH_SPAN_RE = re.compile(
    r"\$\$((?:\\.|[^$\\])+)\$\$|\\\[((?:[^\\]|\\[^\]])+)\\\]"
    r"|(?<!\\)\$((?:\\.|[^$\\\n])+)\$|\\\(((?:[^\\\n]|\\[^)])+)\\\)"
)
_NUMBER_RE = re.compile(r"(?<![A-Za-z0-9.])-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?%?")
# A prose word: two or more letters not preceded by a backslash (which would make it a LaTeX command).
_PROSE_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")
_EQUALS_RE = re.compile(r"(?<![<>!=\\])=(?!=)")
_VARIABLE_RE = re.compile(r"^(?:[A-Za-z](?:_\{?\w+\}?)?|\\[A-Za-z]+|[A-Za-z]\([A-Za-z0-9]\))$")
# "Answer: 9", "Soucis : 2,74": a leading label of words and a colon, then the answer.
_LABEL_RE = re.compile(r"^\s*[A-Za-z]{2,}(?: [A-Za-z]+)*\s*:\s")
# What a final-answer line must contain to beat an earlier box: a digit or some math, not just words.
_MATHY_RE = re.compile(r"[\d\\^=+*/-]")
_TEXT_GROUP_RE = re.compile(r"\\(?:text\w*|mbox|mathrm|mathbf|operatorname)\s*\{[^{}]*\}|\\begin\{\w+\*?\}|\\end\{\w+\*?\}")


def _is_list_gap(gap: str) -> bool:
    r"""Whether ``gap``, the text between two boxes or math spans, makes them one multi-part answer.

    >>> _is_list_gap(" and "), _is_list_gap(" ++++++ "), _is_list_gap(r"} \text{ for part (a) and } ")
    (True, True, True)
    >>> _is_list_gap(r" \) and \( y_2 = "), _is_list_gap(", b = ")
    (True, True)
    >>> _is_list_gap(", no wait, "), _is_list_gap(", no wait, x = "), _is_list_gap(" + ")
    (False, False, False)
    """
    gap = _NEXT_LABEL_RE.sub("", _LINE_BREAK_RE.sub(" ", gap))
    if _BOX_GAP_RE.match(gap) or _JUNK_GAP_RE.match(gap):
        return True
    return bool(_WORDS_AND_GAP_RE.match(_GAP_WRAPPER_RE.sub(" ", gap)))


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


def _boxed_at(text: str, start: int) -> tuple[str, int] | None:
    """Content and end position of the ``\\boxed``/``\\fbox`` command starting at ``text[start]``."""
    i = start + (6 if text.startswith("\\boxed", start) else 5)
    if i < len(text) and text[i] == "{":
        content = _balanced_content(text, i)
        return None if content is None else (content, i + len(content) + 2)
    if i < len(text) and text[i] == " ":
        # `\boxed 7` is valid LaTeX: the argument is the next token.
        token = text[i + 1 :].split(maxsplit=1)
        return (token[0].rstrip(".$"), i + 1 + len(token[0])) if token else None
    return None


def trailing_boxes(text: str) -> str | None:
    r"""Content of the last box, joined with the boxes just before it when only separators lie between
    (a multi-part answer written as several boxes).

    >>> trailing_boxes(r"roots $\boxed{-2}$ and $\boxed{1}$."), trailing_boxes(r"\boxed{10}, no, \boxed{12}")
    ('-2, 1', '12')
    """
    starts = sorted(
        m.start() for m in re.finditer(r"\\boxed|\\fbox", text[-_TAIL_CHARS - MAX_ANSWER_CHARS :])
    )
    offset = max(0, len(text) - _TAIL_CHARS - MAX_ANSWER_CHARS)
    parts: list[str] = []
    next_start = None
    for start in reversed(starts):
        box = _boxed_at(text, start + offset)
        if box is None:
            continue
        content, end = box
        if next_start is not None and not _is_list_gap(text[end:next_start]):
            break
        parts.append(content)
        next_start = start + offset
    return ", ".join(reversed(parts)) if parts else None


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
    box = _boxed_at(text, start)
    return None if box is None else box[0]


def _outside_words(text: str) -> list[str]:
    outside = _TEXT_GROUP_RE.sub(" ", _MATH_SPAN_RE.sub(" ", text))
    return _PROSE_WORD_RE.findall(outside)


def is_prose(text: str) -> bool:
    r"""Whether ``text`` is a sentence around an answer rather than a bare answer: words next to a math
    span, or at least two words (one of three letters or more) outside LaTeX commands and ``\text{}``.

    >>> is_prose("Answer $9$"), is_prose(r"12\text{ and }13"), is_prose("AB=4,CD=5"), is_prose("so the answer is 5")
    (True, False, False, True)
    >>> is_prose("Total : 2,74 $"), is_prose("12:00")
    (True, False)
    """
    words = _outside_words(text)
    if not words:
        return False
    if _MATH_SPAN_RE.search(text) or _LABEL_RE.match(text):
        return True
    return len(words) >= 2 and any(len(w) >= 3 for w in words)


def _consistent(sides: list[str]) -> bool:
    # `4 = 5`, `1 = 2 = 3`, `2+3 = 6`: a chain with a number or plain arithmetic that differs from its
    # last term claims two values; only the sides that can be evaluated in process are checked.
    last = term_value(sides[-1])
    if last is None:
        return True
    return all(
        value is None or numbers_close(value, last, _CHAIN_REL_TOL)
        for value in (term_value(side) for side in sides[:-1])
    )


def _answer_side(span: str) -> str:
    # `5 \times 6 = 120` or `y = 8 - 2 = 6` is a computation ending in the answer; `x = 5` is kept whole
    # because the comparator already matches an assignment against a bare value. A chain whose terms
    # disagree is kept whole too: it is not an answer.
    sides = _EQUALS_RE.split(span)
    if "," in span or ";" in span:
        return span  # `x=1, y=2` lists several assignments
    if len(sides) > 2 or (len(sides) == 2 and not _VARIABLE_RE.match(sides[0].strip())):
        return sides[-1] if _consistent(sides) else span
    return span


def _joined_spans(text: str, spans: list[re.Match]) -> str | None:
    # `$21, 16$ or $11$`: spans separated only by "and"/"or"/commas form one multi-part answer.
    parts = [spans[-1]]
    for span in reversed(spans[:-1]):
        if not _is_list_gap(text[span.end() : parts[-1].start()]):
            break
        parts.append(span)
    contents = [_answer_side(next(g for g in m.groups() if g is not None)).strip() for m in reversed(parts)]
    return ", ".join(c for c in contents if c) or None


def _after_thinking(text: str) -> str | None:
    close = text.rfind("</think>")
    if close >= 0:
        return text[close + len("</think>") :]
    # Reasoning that was opened but never closed was cut off: nothing in it is a final answer.
    return None if "<think>" in text else text


def last_math(text: str) -> str | None:
    r"""For prose only: the last math span or number, whichever ends later (None for a bare answer, so
    that ``x^2+1`` is compared whole instead of as its last number).

    >>> last_math(r"Thus $x \geq 5$ is the solution."), last_math("so 12,000 apples and 7 pears.")
    ('x \\geq 5', '7')
    >>> last_math(r"The volume is $5 \times 6 \times 4 = 120$"), last_math(r"\frac{1}{2}") is None
    ('120', True)
    """
    text = _after_thinking(text)
    if text is None:
        return None
    tail = text[-_TAIL_CHARS:]
    if not is_prose(tail):
        return None
    spans = list(_MATH_SPAN_RE.finditer(tail))
    numbers = list(_NUMBER_RE.finditer(tail))
    span, number = (spans[-1] if spans else None), (numbers[-1] if numbers else None)
    if span is not None and (number is None or span.end() >= number.end()):
        return _joined_spans(tail, spans)
    return number.group(0).rstrip(",") if number is not None else None


def _answer_tag(text: str) -> str | None:
    start = text.rfind("<answer>")
    if start < 0:
        return None
    end = text.find("</answer>", start)
    if end < 0:
        return None
    content = text[start + len("<answer>") : end]
    # `<answer>The answer is \boxed{5}</answer>`: the box is the answer, the prose is decoration.
    boxed = trailing_boxes(content)
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
    elif is_prose(line):
        # "Final Answer: The largest $n$ is 34." -> the last math span or number of the sentence.
        return last_math(line)
    return line.rstrip(". ")


def _gsm8k(text: str) -> str | None:
    start = text.rfind("####")
    if start < 0:
        return None
    return _rest_of_line(text, start + 4)


_EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "answer_tag": _answer_tag,
    "boxed": trailing_boxes,
    "final_answer": _final_answer,
    "gsm8k": _gsm8k,
    "last_math": last_math,
}


def _final_answer_after_box(text: str, sources: tuple[str, ...]) -> bool:
    # `... = \boxed{255}. ... The final answer is $10,455$.`: a box written before the closing
    # statement is an intermediate result, whichever of the two sources is listed first.
    if "boxed" not in sources or "final_answer" not in sources:
        return False
    box = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    return box >= 0 and _FINAL_ANSWER_RE.search(text, max(box, len(text) - _TAIL_CHARS)) is not None


def _from_source(source: str, text: str, sources: tuple[str, ...]) -> str | None:
    found = _EXTRACTORS[source](text)
    if source == "boxed" and found is not None and _final_answer_after_box(text, sources):
        closing = _final_answer(text)
        if closing is not None and _MATHY_RE.search(closing):
            return closing
    return found


def extract_answer(completion: str, sources: tuple[str, ...] = ANSWER_SOURCES) -> str | None:
    r"""The final answer in ``completion``, or None when no source finds one.

    ``sources`` lists where to look, highest priority first (default `ANSWER_SOURCES`):
    ``answer_tag`` (last ``<answer>...</answer>``; a ``\boxed{}`` inside it wins), ``boxed`` (last
    ``\boxed{}``/``\fbox{}``, joined with the boxes just before it when only separators lie between; a
    "final answer is" statement with some math after the last box wins over it), ``final_answer`` ("final answer is ..." / "Final Answer: ..." to the end of the line), ``gsm8k`` (text
    after the last ``####``) and ``last_math`` (in prose only, the last math span or number; never inside
    an unclosed ``<think>``).

    >>> extract_answer(r"<think>maybe \boxed{3}</think> <answer>\boxed{4}</answer>")
    '4'
    >>> extract_answer("The final answer is $\\frac{1}{2}$. I hope it is correct.")
    '\\frac{1}{2}'
    >>> extract_answer("She pays 3 * 4 = 12\n#### 12")
    '12'
    >>> extract_answer("no answer here") is None
    True
    >>> extract_answer(r"$\boxed{255}$ so she has $10,455. The final answer is $10,455$.")
    '10,455'
    """
    unknown = [s for s in sources if s not in _EXTRACTORS]
    if unknown:
        raise UserError(f"unknown answer source(s) {unknown}; choose from {list(_EXTRACTORS)}")
    for source in sources:
        found = _from_source(source, completion, sources)
        if found is not None and found.strip():
            return found.strip()
    return None
