r"""Read the final answer of a completion from the place the recipe declares, and nowhere else.

An RL policy optimizes whatever the reward reads. A reward that falls back to "the whole text" or to
"the last number anywhere" pays for echoing the question (``67 - 66`` scored as 1), for hedging (two
answers, one of them right) and for answers hidden in the thought. So a completion is read strictly:

- The answer lives after the thought, ``<think>...</think>`` (the completion may start inside it when the
  prompt opened it: ``think_prefilled``). The three training formats demand a closed, non-empty
  thought: an answer with no thought, before it, inside it, or after an empty one is no answer.
- ``answer_tag``: exactly one ``<answer>...</answer>`` in the whole completion, after the thought, with
  nothing but whitespace after ``</answer>`` (prose between ``</think>`` and ``<answer>`` is allowed: a
  summary is not an answer). A ``\boxed{}`` inside the tag is the answer (``<answer>so \boxed{4}</answer>``).
- ``boxed``: the ``\boxed{}``/``\fbox{}`` after the thought. Several boxes count only as one
  multi-part answer (``\boxed{-2} and \boxed{3}``); a correction (``\boxed{3}, no, \boxed{4}``), a box
  inside a box, an empty box or a number after the last box (``\boxed{3} or 4``) is no answer; words
  after it are fine (``$\boxed{3}$ apples.``).
- ``final_answer``: a final-answer statement ("The final answer is 5", "Answer: 5", "答案是 5",
  "Ответ: 5", ...; `FINAL_ANSWER_MARKERS`, or a recipe's own regex) as the last line of the completion.
  Several statements that disagree, or one that names two numbers ("3 or maybe 4"), are no answer.
- ``any``: the lenient priority list of `rewards.math.extract.extract_answer` (tag, box, final-answer
  statement, ``####``, the last number of a prose sentence) after the thought, for grading free-form
  output of models not trained to a format. No thought is needed (an unclosed one still means no
  answer). Never the whole text.

``bare`` (only for `rewards.math.verify`): the prediction *is* the answer, no extraction.
"""

from __future__ import annotations

import re
from functools import lru_cache
from itertools import pairwise

from r1kit.errors import UserError
from rewards.math.extract import _NUMBER_RE, _boxed_at, _is_list_gap, extract_answer, is_prose, last_math

ANSWER_FORMATS = ("answer_tag", "boxed", "final_answer", "any")
"""Where a completion's answer may be read (recipes' ``answer_format``)."""
VERIFY_FORMATS = ("bare", *ANSWER_FORMATS)

_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
_ANSWER_OPEN, _ANSWER_CLOSE = "<answer>", "</answer>"
_BOX_RE = re.compile(r"\\boxed|\\fbox")
_DIGIT_RE = re.compile(r"\d")
# A label's subscript or a unit's exponent (`x_1 = \boxed{2}`, `\boxed{5} cm^2`) is not a second number.
_SCRIPT_RE = re.compile(r"[_^]\s*(?:\{[^{}]*\}|\w)")
# More boxes than this after the thought is spraying, not a multi-part answer.
_MAX_BOXES = 16

# Answer prefixes of multilingual graders (MGSM's per-language "Answer" words, simple-evals'
# multilingual templates) plus the "final answer" phrasings of English few-shot prompts. A marker must
# not sit inside a word or an `<answer>` tag.
FINAL_ANSWER_MARKERS = (
    r"(?:the\s+)?final\s+answer(?:\s+is)?",
    r"the\s+answer\s+is",
    r"answer",
    r"最终答案(?:是|为|為)?", r"最終答案(?:是|為)?", r"答案(?:是|为|為)?",
    r"最終的な答え(?:は)?", r"答え(?:は)?", r"解答(?:は)?",
    r"(?:окончательный\s+)?ответ",
    r"réponse(?:\s+finale)?", r"respuesta(?:\s+final)?", r"(?:endgültige\s+)?antwort", r"resposta(?:\s+final)?",
    r"risposta(?:\s+finale)?",
    r"الإجابة(?:\s+النهائية)?", r"الجواب", r"अंतिम\s+उत्तर", r"उत्तर", r"উত্তর", r"సమాధానం", r"คำตอบ",
    r"jibu", r"정답", r"답",
)
# After the marker: a copula ("is", "est", "是", "は") or a separator (":", "="); at least one, so that
# "answer" in a sentence ("let me answer this") is not a marker.
_MARKER_TAIL = r"(?:\s*(?:is|est|ist|es|é|è|هي|है|是|为|為|は|은|는|:|：|=|—|–))+\s*"
# "答えは5です。": a closing politeness suffix and full stops are not part of the answer.
_CLOSING_RE = re.compile(r"(?:\s*(?:です|である|。|．|\.|।))+$")
_HOPE_RE = re.compile(r"\.?\s*I hope it is correct\.?\s*$", re.IGNORECASE)
_NUMBER_THEN_WORDS_RE = re.compile(r"^(?P<number>-?\$?\d[\d,]*(?:\.\d+)?(?:/\d+)?%?)\s+[A-Za-z][A-Za-z .]*$")


@lru_cache(maxsize=32)
def final_answer_regex(pattern: str = "") -> re.Pattern:
    """The compiled marker regex: ``pattern`` (a recipe's own) or the built-in `FINAL_ANSWER_MARKERS`.

    >>> bool(final_answer_regex().search("所以答案是 5")), bool(final_answer_regex().search("<answer>5"))
    (True, False)
    """
    markers = pattern or "|".join(FINAL_ANSWER_MARKERS)
    # A recipe's own pattern is the whole marker; the built-in words need a copula or separator after.
    tail = _MARKER_TAIL.replace(")+", ")*", 1) if pattern else _MARKER_TAIL
    try:
        return re.compile(rf"(?<![A-Za-z<>/])(?:{markers})" + tail, re.IGNORECASE)
    except re.error as e:
        raise UserError(f"final_answer_pattern {pattern!r} is not a valid regular expression: {e}") from None


def check_answer_format(answer_format: str, allowed: tuple[str, ...] = ANSWER_FORMATS) -> None:
    if answer_format not in allowed:
        raise UserError(f"answer_format must be one of {list(allowed)}, got {answer_format!r}")


def split_thought(text: str, think_prefilled: bool, required: bool = True) -> tuple[str, str] | None:
    """``(thought, after)``: the thought (up to the last ``</think>``, from the ``<think>`` before it if
    the completion opened it) and the text after it. None when the thought is unclosed or has nothing
    in it. A completion with no thought tags at all is all "after" only when a thought is not
    ``required`` and the prompt did not open one (``think_prefilled``).

    >>> split_thought("<think>2+2</think> <answer>4</answer>", False), split_thought("2+2</think>4", False)
    (('2+2', ' <answer>4</answer>'), ('2+2', '4'))
    >>> split_thought("<answer>4</answer>", False), split_thought("<answer>4</answer>", False, required=False)
    (None, ('', '<answer>4</answer>'))
    >>> split_thought("2+2 <answer>4</answer>", True, required=False), split_thought("<think> </think>4", False)
    (None, None)
    """
    close = text.rfind(_THINK_CLOSE)
    if close < 0:
        return None if required or think_prefilled or _THINK_OPEN in text else ("", text)
    opened = text.rfind(_THINK_OPEN, 0, close)
    thought = text[opened + len(_THINK_OPEN) if opened >= 0 else 0 : close]
    if not thought.strip():
        return None
    return thought, text[close + len(_THINK_CLOSE) :]


def strict_boxes(text: str) -> str | None:
    r"""The boxed answer of ``text``: one box, or several joined only by separators (a multi-part
    answer, returned comma-joined). None for no box, an empty, unclosed or nested box, or a correction.

    >>> strict_boxes(r"so $\boxed{-2}$ and $\boxed{3}$"), strict_boxes(r"\boxed{3}, no wait, \boxed{4}")
    ('-2, 3', None)
    >>> strict_boxes(r"\boxed{\boxed{4}}"), strict_boxes(r"\boxed{ }")
    (None, None)
    """
    boxes: list[tuple[int, int, str]] = []
    for match in _BOX_RE.finditer(text):
        if len(boxes) == _MAX_BOXES or (boxes and match.start() < boxes[-1][1]):
            return None
        box = _boxed_at(text, match.start())
        if box is None or not box[0].strip():
            return None
        boxes.append((match.start(), box[1], box[0].strip()))
    if not boxes:
        return None
    for (_, end, _), (start, _, _) in pairwise(boxes):
        if not _is_list_gap(text[end:start]):
            return None
    return ", ".join(content for *_, content in boxes)


def _lone_boxes(text: str) -> str | None:
    r"""`strict_boxes`, with no number outside the boxes (sub- and superscripts aside).

    >>> _lone_boxes(r"so \boxed{4}"), _lone_boxes(r"x_1 = \boxed{4} cm^2"), _lone_boxes(r"3 \boxed{4}"), _lone_boxes(r"\boxed{4} 5")
    ('4', '4', None, None)
    """
    found = strict_boxes(text)
    if found is None:
        return None
    outside, end = [], 0
    for match in _BOX_RE.finditer(text):
        box = _boxed_at(text, match.start())
        outside.append(text[end : match.start()])
        end = box[1]
    outside.append(text[end:])
    return None if _DIGIT_RE.search(_SCRIPT_RE.sub("", "".join(outside))) else found


def _answer_tag(text: str, after: str) -> str | None:
    if text.count(_ANSWER_OPEN) != 1 or text.count(_ANSWER_CLOSE) != 1:
        return None
    start, end = after.find(_ANSWER_OPEN), after.find(_ANSWER_CLOSE)
    if start < 0 or end < start or after[end + len(_ANSWER_CLOSE) :].strip():
        return None
    content = after[start + len(_ANSWER_OPEN) : end]
    return _lone_boxes(content) if _BOX_RE.search(content) else content.strip()


def _statement(line: str) -> str | None:
    line = _CLOSING_RE.sub("", _HOPE_RE.sub("", line).strip())
    if line.startswith("$") and line.find("$", 1) > 0:
        return line[1 : line.find("$", 1)]  # "The final answer is $x^2$." -> the math span
    if _BOX_RE.search(line):
        return _lone_boxes(line)
    # "The answer is 12 apples": words after the one number are prose, as after a box.
    if m := _NUMBER_THEN_WORDS_RE.match(line):
        return m["number"]
    if not is_prose(line):
        return line
    # "The answer is 12 apples" -> 12; "The answer is 3 or maybe 4" names two numbers: no answer.
    return last_math(line) if len(set(_NUMBER_RE.findall(line))) <= 1 else None


def _boxed(after: str) -> str | None:
    if _ANSWER_OPEN in after or _ANSWER_CLOSE in after:
        return None
    found = strict_boxes(after)
    last = max(after.rfind("\\boxed"), after.rfind("\\fbox"))
    box = _boxed_at(after, last) if found is not None else None
    # Words may follow the box ("$\boxed{5}$ apples."); another number ("\boxed{5} or 6") is a hedge.
    return None if box is None or _DIGIT_RE.search(after[box[1] :]) else found


def _final_answer(after: str, pattern: str) -> str | None:
    if _ANSWER_OPEN in after or _ANSWER_CLOSE in after:
        return None
    answers, last_end = set(), 0
    for match in final_answer_regex(pattern).finditer(after):
        # "Final answer:\n5": the answer may sit on the next line.
        start = match.end() + len(after[match.end() :]) - len(after[match.end() :].lstrip())
        end = after.find("\n", start)
        end = len(after) if end < 0 else end
        answer = _statement(after[start:end])
        if answer and answer.strip():
            answers.add(answer.strip())
            last_end = end
    if len(answers) != 1 or after[last_end:].strip():
        return None
    return answers.pop()


def read_answer(text: str, answer_format: str, think_prefilled: bool = False, pattern: str = "") -> str | None:
    r"""The answer of ``text`` read from ``answer_format`` (see the module docstring), or None.

    >>> read_answer("<think>67 - 66</think><answer>1</answer>", "answer_tag")
    '1'
    >>> read_answer("<answer>1</answer><answer>2</answer>", "answer_tag"), read_answer("67 - 66", "any")
    (None, None)
    >>> read_answer("12 + 3</think>\n答案是 15", "final_answer", think_prefilled=True)
    '15'
    """
    check_answer_format(answer_format)
    parts = split_thought(text, think_prefilled, required=answer_format != "any")
    if parts is None:
        return None
    after = parts[1]
    if answer_format == "answer_tag":
        found = _answer_tag(text, after)
    elif answer_format == "boxed":
        found = _boxed(after)
    elif answer_format == "final_answer":
        found = _final_answer(after, pattern)
    else:
        # The lenient list, then a final-answer statement in any language ("Ответ: 5").
        found = extract_answer(after) or _final_answer(after, pattern)
    return found if found else None


def is_well_formatted(
    text: str, answer_format: str = "answer_tag", think_prefilled: bool = False, pattern: str = ""
) -> bool:
    r"""Whether ``text`` is exactly one leading, non-empty thought followed by an answer in
    ``answer_format``: for ``answer_tag`` nothing but whitespace may surround ``<answer>...</answer>``;
    for the other formats `read_answer` must find the answer after the thought.

    >>> is_well_formatted("<think>\n2+2=4\n</think>\n\n<answer> 4 </answer>\n")
    True
    >>> is_well_formatted("<think>a<think>b</think></think><answer>4</answer>")
    False
    >>> is_well_formatted(r"2+2 is 4</think> so \boxed{4}", "boxed", think_prefilled=True)
    True
    """
    check_answer_format(answer_format)
    body = (_THINK_OPEN + text if think_prefilled else text).lstrip()
    if not body.startswith(_THINK_OPEN) or body.count(_THINK_OPEN) != 1 or body.count(_THINK_CLOSE) != 1:
        return False
    thought, after = body[len(_THINK_OPEN) :].split(_THINK_CLOSE, 1)
    if not thought.strip() or _ANSWER_OPEN in thought or _ANSWER_CLOSE in thought:
        return False
    if answer_format == "answer_tag":
        after = after.strip()
        if not (after.startswith(_ANSWER_OPEN) and after.endswith(_ANSWER_CLOSE)):
            return False
    return read_answer(body, answer_format, False, pattern) is not None
