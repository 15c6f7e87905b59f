"""String-level answer normalization and the exact-number fast path (stdlib only).

Most training answers (GSM8K integers, AIME integers, simple fractions and decimals) never need sympy:
`quick_verdict` settles them here in microseconds and in the calling process. It only runs on short
strings (`QUICK_MAX_CHARS`), so its regexes are bounded; everything it cannot settle goes to the
sympy stage in a worker process.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

QUICK_MAX_CHARS = 200

_WRAPPER_RE = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|mbox|emph)\s*\{([^{}]*)\}")
# `\!` and `\,` join (`10,\!080`, `1\,000`); the wider spaces separate. The lookbehind keeps a
# matrix row break `\\ ` intact.
_JOIN_SPACE_RE = re.compile(r"(?<!\\)\\[!,]\s*")
_SPACING_RE = re.compile(r"(?<!\\)\\[;: ]|\\q?quad|~")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree")
_FRAC_VARIANT_RE = re.compile(r"\\[dtc]frac")
# A trailing `\` or `\\` is a line break left over from a display environment, not part of the answer.
_TRAILING_BREAK_RE = re.compile(r"\s*\\\\?$")
_HOPE_RE = re.compile(r"\.?\s*I hope it is correct\.?$", re.IGNORECASE)
_DELIMS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))


def unwrap_text(s: str) -> str:
    r"""``\text{...}``-style wrappers replaced by their content (innermost first).

    >>> unwrap_text(r"\textbf{\text{(B)}}")
    '(B)'
    """
    previous = None
    while previous != s:
        previous, s = s, _WRAPPER_RE.sub(r"\1", s)
    return s


def _strip_delimiters(s: str) -> str:
    changed = True
    while changed:
        changed = False
        s = s.strip()
        for left, right in _DELIMS:
            if len(s) > len(left) + len(right) and s.startswith(left) and s.endswith(right):
                s = s[len(left) : len(s) - len(right)]
                changed = True
        if s.startswith("\\boxed{") and s.endswith("}"):
            s, changed = s[len("\\boxed{") : -1], True
    return s


def clean(answer: str) -> str:
    r"""Presentation-only cleanup shared by every stage: math delimiters, ``\boxed``, ``\left``/``\right``,
    LaTeX spacing, ``\dfrac``/``\tfrac``, degree signs and a trailing period.

    >>> clean(r"$\left( \dfrac{3}{2}, -13 \right).$")
    '( \\frac{3}{2}, -13 )'
    """
    s = _HOPE_RE.sub("", answer.strip())
    s = _strip_delimiters(s.rstrip(". ").strip())
    s = s.replace("\\left", "").replace("\\right", "").replace("\\displaystyle", "")
    s = _SPACING_RE.sub(" ", _JOIN_SPACE_RE.sub("", s))
    s = _FRAC_VARIANT_RE.sub(r"\\frac", s)
    s = _DEGREE_RE.sub("", s)
    s = _TRAILING_BREAK_RE.sub("", s.strip())
    return s.strip().rstrip(".").strip()


# ---- numbers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Num:
    """A parsed number. ``ulp`` is the unit in the last written place of a decimal literal
    (``0.33`` -> 1/100) and None for exact values (integers, fractions)."""

    value: Fraction
    ulp: Fraction | None = None
    percent: bool = False


_CURRENCY_RE = re.compile(r"^(-?)\s*(?:\\\$|\$|€|£|¥|₹|US\$|USD\s*|Rs\.?\s*)\s*")
_PERCENT_RE = re.compile(r"\s*(?:\\%|%|\s+percent|\s*pct)$", re.IGNORECASE)
# Math words that must never be mistaken for a unit: "5 pi" is not 5.
_NOT_UNITS = {"pi", "sqrt", "log", "ln", "sin", "cos", "tan", "exp", "inf", "infty", "infinity", "or", "and"}
_UNIT_RE = re.compile(
    r"(?:\s*\\?(?:text|mbox|mathrm)\{\s*([A-Za-z][A-Za-z .]*)\}|\s*([A-Za-z]{2,}\.?))(?:\s*\^\s*\{?[23]\}?)?$"
)

# A comma and then a space separates list items (`32, 349`); `32,\! 349` is glued together by `clean`.
_SEP = r"(?:,|\{,\}|\s)"
_INT = rf"(?:[1-9]\d{{0,2}}(?:{_SEP}\d{{3}})+|\d+)"
# `1000,99` / `0,111` / `1,22`: digits, a comma, digits, and not a thousands grouping -> a decimal comma.
_DECIMAL_COMMA_RE = re.compile(r"^(-?\d+),(\d+)$")
_THOUSANDS_RE = re.compile(r"^-?[1-9]\d{0,2}(?:,\d{3})+$")
_DEC = rf"(?:{_INT}(?:\.\d*)?|\.\d+)"
_DECIMAL_RE = re.compile(rf"^(?P<sign>[-+]?)\s*(?P<num>{_DEC})$")
_SCI_RE = re.compile(
    rf"^(?P<sign>[-+]?)\s*(?P<num>{_DEC})\s*(?:[eE]|(?:\\times|\\cdot|×|\*|x)\s*10\s*\^|\*\*)\s*\{{?(?P<exp>[-+]?\d{{1,3}})\}}?$"
)
# A whole part may touch a `\frac` (`1\frac{4}{5}`) but must be space-separated from a slash fraction:
# `63/400` is sixty-three four-hundredths, not 6 3/400.
_FRAC_RE = re.compile(
    r"^(?P<sign>[-+]?)\s*(?:(?:(?P<whole>\d+)\s*)?(?:\\frac\s*\{\s*(?P<n1>\d+)\s*\}\s*\{\s*(?P<d1>\d+)\s*\}"
    r"|\\frac\s*(?P<n2>\d)(?P<d2>\d))|(?:(?P<whole3>\d+)\s+)?(?P<n3>\d+)\s*/\s*(?P<d3>\d+))$"
)


def _strip_units(s: str) -> str:
    while True:
        m = _UNIT_RE.search(s)
        word = m and (m.group(1) or m.group(2) or "").strip(" .").lower()
        if not m or not word or word in _NOT_UNITS or m.start() == 0:
            return s.strip()
        s = s[: m.start()]


def _decimal(sign: str, num: str) -> tuple[Fraction, Fraction | None]:
    digits = re.sub(r"[,{}\s]", "", num)
    value = Fraction(digits if digits != "." else "0")
    places = len(digits) - digits.index(".") - 1 if "." in digits else 0
    ulp = Fraction(1, 10**places) if places else None
    return (-value if sign == "-" else value), ulp


def _core_number(s: str) -> tuple[Fraction, Fraction | None] | None:
    if m := _DECIMAL_RE.match(s):
        return _decimal(m["sign"], m["num"])
    if m := _SCI_RE.match(s):
        mantissa, ulp = _decimal(m["sign"], m["num"])
        scale = Fraction(10) ** int(m["exp"])
        # A float written in scientific notation is inexact to its last mantissa digit.
        return mantissa * scale, (ulp or Fraction(1)) * scale
    if m := _FRAC_RE.match(s):
        num = int(m["n1"] or m["n2"] or m["n3"])
        den = int(m["d1"] or m["d2"] or m["d3"])
        if den == 0:
            return None
        value = Fraction(num, den)
        whole = m["whole"] or m["whole3"]
        if whole is not None:
            # `1\frac{4}{5}` / `1 4/5` is a mixed number only when the fraction is proper.
            if num >= den:
                return None
            value += int(whole)
        return (-value if m["sign"] == "-" else value), None
    return None


def parse_number(answer: str) -> Num | None:
    r"""A plain number (after `clean`), or None if ``answer`` is anything else.

    Accepts thousands separators, currency, trailing units, percent signs, scientific notation,
    fractions and mixed numbers.

    >>> parse_number(r"\$32,\!348") == Num(Fraction(32348))
    True
    >>> parse_number(r"1\frac{4}{5}").value, parse_number("12.50%").percent
    (Fraction(9, 5), True)
    >>> parse_number("5x") is None
    True
    """
    s = unwrap_text(clean(answer))
    s = _CURRENCY_RE.sub(r"\1", s)
    percent = bool(_PERCENT_RE.search(s))
    s = _PERCENT_RE.sub("", s)
    s = _strip_units(s)
    s = _CURRENCY_RE.sub(r"\1", s)
    core = _core_number(s)
    if core is None:
        return None
    return Num(core[0], core[1], percent)


def decimal_comma(answer: str) -> Num | None:
    """``answer`` read with a decimal comma (``1000,99`` -> 1000.99); None unless it is digits, one comma
    and digits that cannot be a thousands grouping.

    >>> decimal_comma("1,22").value, decimal_comma("0,111").value, decimal_comma("1,000")
    (Fraction(61, 50), Fraction(111, 1000), None)
    """
    m = _DECIMAL_COMMA_RE.match(answer.strip())
    if m is None or _THOUSANDS_RE.match(answer.strip()):
        return None
    return parse_number(f"{m.group(1)}.{m.group(2)}")


def _candidates(n: Num) -> list[Fraction]:
    # "50%" may be meant as 50 or as 0.5; both are accepted, but only when a percent sign is written.
    return [n.value, n.value / 100] if n.percent else [n.value]


def numbers_close(a: Num, b: Num, rel_tol: float) -> bool:
    """Exact values must match exactly. When either side is a written decimal, they match if they
    agree to that decimal's last written place (rounded or truncated) *and* within ``rel_tol``
    relative error, so ``0.33333 ~ 1/3`` but ``0.33 !~ 1/3`` and ``10000.5 !~ 10000``.

    >>> numbers_close(parse_number("0.33333"), parse_number(r"\\frac13"), 1e-4)
    True
    >>> numbers_close(parse_number("0.33"), parse_number(r"\\frac13"), 1e-4)
    False
    """
    ulps = [u for u in (a.ulp, b.ulp) if u is not None]
    tol = Fraction(rel_tol)
    for x in _candidates(a):
        for y in _candidates(b):
            if x == y:
                return True
            diff = abs(x - y)
            if ulps and diff < max(ulps) and diff <= tol * max(abs(x), abs(y)):
                return True
    return False


# ---- letters and words -----------------------------------------------------------------------

_CHOICE_GOLD_RE = re.compile(r"^\(?([A-E])\)?$")
_CHOICE_PRED_RE = re.compile(r"^(?:option\s*|choice\s*)?\(?([A-Ea-e])\)?(?:[\s.:)]|$)", re.IGNORECASE)
_WORDS_RE = re.compile(r"^[A-Za-z][A-Za-z' \-]*[A-Za-z]$")


def choice_letter(answer: str, *, is_gold: bool) -> str | None:
    """The multiple-choice letter A-E. A gold answer must be the bare letter (``B``, ``(B)``,
    ``\\text{(B)}``); a prediction may go on after it (``(B) 12``).

    >>> choice_letter(r"\\text{(C)}", is_gold=True), choice_letter("(c) 42 apples", is_gold=False)
    ('C', 'C')
    """
    s = unwrap_text(clean(answer)).strip()
    m = (_CHOICE_GOLD_RE if is_gold else _CHOICE_PRED_RE).match(s)
    return m.group(1).upper() if m else None


def text_answer(answer: str) -> str | None:
    r"""A word answer (``\text{Evelyn}``, ``east``), case- and space-folded; None for math.

    >>> text_answer(r"\text{ East }"), text_answer("x + y")
    ('east', None)
    """
    s = unwrap_text(clean(answer)).strip()
    if not _WORDS_RE.match(s) or len(s.replace(" ", "")) < 2 or s.lower() in _NOT_UNITS:
        return None
    return " ".join(s.lower().split())


_BASE_RE = re.compile(r"^(?=[0-9A-Fa-f]*\d)([0-9A-Fa-f]+)_\{?(\d+)\}?$")


def _number_base(answer: str) -> tuple[str, str] | None:
    """``("52", "8")`` for the base-8 numeral ``52_8``/``52_{8}``; None for anything else (``x_1``)."""
    m = _BASE_RE.match(answer.replace(" ", ""))
    return (m.group(1).upper(), m.group(2)) if m else None


def quick_verdict(prediction: str, gold: str, rel_tol: float) -> bool | None:
    """True/False when string rules settle the pair, None when it needs the sympy stage.

    >>> quick_verdict("1,000", "1000", 1e-4), quick_verdict("(B)", "B", 1e-4), quick_verdict("x^2", "x*x", 1e-4)
    (True, True, None)
    """
    g, p = clean(gold), clean(prediction)
    if not g or not p:
        return False
    if g.replace(" ", "") == p.replace(" ", ""):
        return True
    base = _number_base(g)
    if base is not None:
        # `52_8` is a numeral in base 8 (latex2sympy would drop the base): the digits and the base
        # must match; leaving the base off (`52`) is accepted.
        return _number_base(p) == base or p.replace(" ", "").upper() == base[0]
    letter = choice_letter(g, is_gold=True)
    if letter is not None:
        return choice_letter(p, is_gold=False) == letter
    word = text_answer(g)
    if word is not None:
        return text_answer(p) == word
    gn, pn = parse_number(g), parse_number(p)
    # Only when the other side is a number is a lone comma read as a European decimal point: `3,5` is
    # otherwise the list {3, 5}.
    if gn is None and pn is not None:
        gn = decimal_comma(g)
    elif pn is None and gn is not None:
        pn = decimal_comma(p)
    if gn is not None and pn is not None:
        return numbers_close(gn, pn, rel_tol)
    return None
