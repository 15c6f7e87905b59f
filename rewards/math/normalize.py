"""String-level answer normalization and the exact-number fast path (stdlib only).

Most training answers (GSM8K integers, AIME integers, simple fractions and decimals, tuples and intervals
of such numbers) never need sympy: `quick_verdict` settles them here in microseconds and in the calling
process. It only runs on short strings (`QUICK_MAX_CHARS`), so its regexes are bounded; everything it
cannot settle goes to the sympy stage in a worker process.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from dataclasses import dataclass, field
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
# `$28$ %`: a percent sign written after the math span belongs to the number inside it.
_SPAN_PERCENT_RE = re.compile(r"^(\$\$?)([^$]+)\1\s*\\?%$")
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

    >>> clean(r"$\left( \dfrac{3}{2}, -13 \right).$"), clean("$28$ %")
    ('( \\frac{3}{2}, -13 )', '28\\%')
    """
    s = _HOPE_RE.sub("", answer.strip())
    s = _SPAN_PERCENT_RE.sub(r"\2\\%", s)
    s = _strip_delimiters(s.rstrip(". ").strip())
    s = s.replace("\\left", "").replace("\\right", "").replace("\\displaystyle", "")
    s = _SPACING_RE.sub(" ", _JOIN_SPACE_RE.sub("", s))
    s = _FRAC_VARIANT_RE.sub(r"\\frac", s)
    s = _DEGREE_RE.sub("", s)
    s = _TRAILING_BREAK_RE.sub("", s.strip())
    return s.strip().rstrip(".").strip()


# One-token arguments (`\frac12`, `\sqrt 3`) written out with braces: TeX reads `\frac12` as
# `\frac{1}{2}` and `\sqrt 23` as `\sqrt{2}3`, so this brackets exactly one digit or letter.
_ONE_TOKEN_FRAC_RE = re.compile(r"\\frac\s*([0-9A-Za-z])\s*([0-9A-Za-z])")
_HALF_BRACED_FRAC_RE = re.compile(r"\\frac\s*([0-9A-Za-z])\s*\{")
_FRAC_HALF_BRACED_RE = re.compile(r"\\frac\s*(\{[^{}]*\})\s*([0-9A-Za-z])")
_ONE_TOKEN_SQRT_RE = re.compile(r"\\sqrt\s*([0-9A-Za-z])")
_RELATION_SPELLINGS = (
    (re.compile(r"\\geq?(?![A-Za-z])|\\geqslant|>="), r"\\geq "),
    (re.compile(r"\\leq?(?![A-Za-z])|\\leqslant|<="), r"\\leq "),
    (re.compile(r"\\neq?(?![A-Za-z])|!="), r"\\neq "),
    (re.compile(r"\\gt(?![A-Za-z])"), ">"),
    (re.compile(r"\\lt(?![A-Za-z])"), "<"),
)
# `bmatrix` and `pmatrix` differ only in the brackets drawn (`vmatrix` is a determinant: not included).
_MATRIX_ENV_RE = re.compile(r"\\(begin|end)\{bmatrix\}")
_DIGIT_TIMES_LETTER_RE = re.compile(r"(\d)\s*\*\s*([A-Za-z])")
# A space only matters between two digits (`1 000` or `3 5`) or after a command name (`\pi r`).
_SPACE_RE = re.compile(r"(?<![\d\s])\s+|\s+(?![\d\s])")
_COMMAND_SPACE_RE = re.compile(r"(\\[A-Za-z]+)\s+(?=[A-Za-z])")


def canonical(answer: str) -> str:
    r"""A spelling of the `clean` answer in which notations that mean the same LaTeX coincide: one-token
    ``\frac``/``\sqrt`` arguments braced, ``\ge``/``>=``/``\geq`` unified, ``bmatrix`` as ``pmatrix``,
    ``2*x`` as ``2x`` and spaces dropped where TeX ignores them. Equal canonical forms parse to the same
    expression, so the pair is settled without sympy; unequal ones settle nothing.

    >>> canonical(r"\frac94\pi"), canonical(r"x \ge 5"), canonical(r"\sqrt 2+\sqrt 5"), canonical("x^2 + 2*x + 1")
    ('\\frac{9}{4}\\pi', 'x\\geq5', '\\sqrt{2}+\\sqrt{5}', 'x^2+2x+1')
    """
    s = _ONE_TOKEN_FRAC_RE.sub(r"\\frac{\1}{\2}", answer)
    s = _HALF_BRACED_FRAC_RE.sub(r"\\frac{\1}{", s)
    s = _FRAC_HALF_BRACED_RE.sub(r"\\frac\1{\2}", s)
    s = _ONE_TOKEN_SQRT_RE.sub(r"\\sqrt{\1}", s)
    for pattern, spelling in _RELATION_SPELLINGS:
        s = pattern.sub(spelling, s)
    s = _MATRIX_ENV_RE.sub(r"\\\1{pmatrix}", s)
    s = _DIGIT_TIMES_LETTER_RE.sub(r"\1\2", s)
    s = _COMMAND_SPACE_RE.sub(r"\1~", s.strip())
    return _SPACE_RE.sub("", s).replace("~", " ")


# ---- numbers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Num:
    """A parsed number. ``ulp`` is the unit in the last written place of a decimal literal
    (``0.33`` -> 1/100) and None for exact values (integers, fractions). ``form`` is how it was
    written (`FORMS`); it does not take part in equality."""

    value: Fraction
    ulp: Fraction | None = None
    percent: bool = False
    form: str = field(default="integer", compare=False)


FORMS = ("integer", "decimal", "scientific", "fraction", "unreduced")
"""How a number literal is written. ``fraction``: in lowest terms with a denominator above 1 (a mixed
number's fraction too); ``unreduced``: any other fraction (``12/2``, ``2/4``, ``\\frac{6}{1}``)."""


_CURRENCY_RE = re.compile(r"^(-?)\s*(?:\\\$|\$|€|£|¥|₹|US\$|USD\s*|Rs\.?\s*)\s*")
_PERCENT_RE = re.compile(r"\s*(?:\\%|%|\s+percent|\s*pct)$", re.IGNORECASE)
# Math words that must never be mistaken for a unit: "5 pi" is not 5.
_NOT_UNITS = {"pi", "sqrt", "log", "ln", "sin", "cos", "tan", "exp", "inf", "infty", "infinity", "or", "and"}
# Words an answer may carry after its number (a plural `s` is dropped before the lookup). Only units:
# any word was once stripped, so `5 wrong` and `5 maybe` scored as 5. A gold answer may carry any word.
UNITS = frozenset({
    "mm", "cm", "m", "km", "in", "inch", "inche", "ft", "feet", "foot", "yd", "yard", "mi", "mile", "meter", "metre", "millimeter", "centimeter", "kilometer",
    "mg", "g", "kg", "gram", "kilogram", "lb", "pound", "oz", "ounce", "ton", "tonne",
    "ms", "s", "sec", "second", "min", "minute", "h", "hr", "hour", "day", "week", "month", "year",
    "ml", "l", "liter", "litre", "gallon", "gal", "quart", "pint", "cup",
    "dollar", "cent", "euro", "usd", "penny", "pennie",
    "degree", "deg", "radian", "rad", "percent", "unit", "sq", "square", "cubic", "mph", "kmh",
})
_UNIT_RE = re.compile(
    r"(?:\s*\\?(?:text|mbox|mathrm)\{\s*([A-Za-z][A-Za-z .]*)\}|\s*([A-Za-z]{2,}\.?))(?:\s*\^\s*\{?[23]\}?)?$"
)

# A comma and then a space separates list items (`32, 349`); `32,\! 349` is glued together by `clean`.
# A space groups thousands (`1 000 000`); a line break never does (`88` newline `380` is two numbers).
_SEP = r"(?:,|\{,\}|[ \u00a0\u2009\u202f])"
_INT = rf"(?:[1-9]\d{{0,2}}(?:{_SEP}\d{{3}})+|\d+)"
# `1000,99` / `0,111` / `1,22`: digits, a comma, digits, and not a thousands grouping -> a decimal comma.
_DECIMAL_COMMA_RE = re.compile(r"^(-?\d+),(\d+)$")
_THOUSANDS_RE = re.compile(r"^-?[1-9]\d{0,2}(?:,\d{3})+$")
_DEC = rf"(?:{_INT}(?:\.\d*)?|\.\d+)"
_DECIMAL_RE = re.compile(rf"^(?P<sign>[-+]?)\s*(?P<num>{_DEC})$")
_SCI_RE = re.compile(
    rf"^(?P<sign>[-+]?)\s*(?P<num>{_DEC})\s*(?:[eE]|(?:\\times|\\cdot|×|\*|x)\s*10\s*(?:\^|\*\*))\s*\{{?(?P<exp>[-+]?\d{{1,3}})\}}?$"
)
# A whole part may touch a `\frac` (`1\frac{4}{5}`) but must be space-separated from a slash fraction:
# `63/400` is sixty-three four-hundredths, not 6 3/400.
_FRAC_RE = re.compile(
    r"^(?P<sign>[-+]?)\s*(?:(?:(?P<whole>\d+)\s*)?(?:\\frac\s*\{\s*(?P<n1>\d+)\s*\}\s*\{\s*(?P<d1>\d+)\s*\}"
    r"|\\frac\s*(?P<n2>\d)(?P<d2>\d))|(?:(?P<whole3>\d+)\s+)?(?P<n3>\d+)\s*/\s*(?P<d3>\d+))$"
)


def _is_unit(words: str) -> bool:
    return all(w in UNITS or (w.endswith("s") and w[:-1] in UNITS) for w in words.replace(".", " ").split())


def _strip_units(s: str, any_word: bool) -> str:
    while True:
        m = _UNIT_RE.search(s)
        word = m and (m.group(1) or m.group(2) or "").strip(" .").lower()
        if not m or not word or word in _NOT_UNITS or m.start() == 0 or not (any_word or _is_unit(word)):
            return s.strip()
        s = s[: m.start()]


def _decimal(sign: str, num: str) -> tuple[Fraction, Fraction | None]:
    digits = re.sub(r"[,{}\s]", "", num)
    value = Fraction(digits if digits != "." else "0")
    places = len(digits) - digits.index(".") - 1 if "." in digits else 0
    ulp = Fraction(1, 10**places) if places else None
    return (-value if sign == "-" else value), ulp


def _core_number(s: str) -> tuple[Fraction, Fraction | None, str] | None:
    if m := _DECIMAL_RE.match(s):
        value, ulp = _decimal(m["sign"], m["num"])
        return value, ulp, "integer" if ulp is None and "." not in m["num"] else "decimal"
    if m := _SCI_RE.match(s):
        mantissa, ulp = _decimal(m["sign"], m["num"])
        scale = Fraction(10) ** int(m["exp"])
        # A float written in scientific notation is inexact to its last mantissa digit.
        return mantissa * scale, (ulp or Fraction(1)) * scale, "scientific"
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
        # `12/2`, `2/4`, `\frac{0}{3}`: a division left undone, not a number in final form.
        reduced = den > 1 and num > 0 and math.gcd(num, den) == 1
        return (-value if m["sign"] == "-" else value), None, "fraction" if reduced else "unreduced"
    return None


# Python refuses to convert integers of more than 4300 digits (CVE-2020-10735); no answer is that long.
MAX_DIGITS = 4000
_DIGIT_RUN_RE = re.compile(rf"\d{{{MAX_DIGITS + 1}}}")


def has_huge_number(answer: str) -> bool:
    """Whether ``answer`` holds a run of more than `MAX_DIGITS` digits (not a number to parse).

    >>> has_huge_number("9" * 5000), has_huge_number("1,000")
    (True, False)
    """
    return _DIGIT_RUN_RE.search(answer) is not None


def is_number_literal(answer: str) -> bool:
    r"""Whether ``answer`` is written as one number (integer, decimal, fraction, percentage, with
    optional units from `UNITS` or currency).

    >>> [is_number_literal(a) for a in ("46", "-3/4", r"\frac{1}{2}", "12.5%", "3,5", "66 - 20", "99\n12", "5 wrong")]
    [True, True, True, True, True, False, False, False]
    """
    return parse_number(answer) is not None or decimal_comma(answer) is not None


def parse_number(answer: str, *, any_unit: bool = False) -> Num | None:
    r"""A plain number (after `clean`), or None if ``answer`` is anything else.

    Accepts thousands separators (a comma or a space before each group of exactly three digits),
    currency, trailing units (`UNITS`; any word with ``any_unit``, for gold answers such as ``125
    apples``), percent signs, scientific notation, fractions and mixed numbers.

    >>> parse_number(r"\$32,\!348") == Num(Fraction(32348))
    True
    >>> parse_number(r"1\frac{4}{5}").value, parse_number("12.50%").percent
    (Fraction(9, 5), True)
    >>> parse_number("5x") is None, parse_number("5 apples") is None, parse_number("5 apples", any_unit=True).value
    (True, True, Fraction(5, 1))
    >>> parse_number("12/2").form, parse_number("-3/4").form, parse_number("1e4").form, parse_number("1 234").value
    ('unreduced', 'fraction', 'scientific', Fraction(1234, 1))
    """
    if has_huge_number(answer):
        return None
    s = unwrap_text(clean(answer))
    s = _CURRENCY_RE.sub(r"\1", s)
    percent = bool(_PERCENT_RE.search(s))
    s = _PERCENT_RE.sub("", s)
    s = _strip_units(s, any_unit)
    s = _CURRENCY_RE.sub(r"\1", s)
    core = _core_number(s)
    if core is None:
        return None
    return Num(core[0], core[1], percent, core[2])


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


def _candidates(n: Num) -> list[tuple[Fraction, Fraction | None]]:
    # "50%" may be meant as 50 or as 0.5; both are accepted, but only when a percent sign is written.
    if not n.percent:
        return [(n.value, n.ulp)]
    return [(n.value, n.ulp), (n.value / 100, n.ulp / 100 if n.ulp else None)]


# A decimal rounded from an exact value needs this many significant digits: `0.33` stands for 1/3,
# `0.3` (one digit) is too coarse to tell 1/3 from 0.3 or 2/7.
MIN_ROUNDED_DIGITS = 2


def _rounded_from(decimal: Fraction, ulp: Fraction, exact: Fraction) -> bool:
    """Whether ``exact`` rounded to the last written place (``ulp``) of ``decimal`` gives ``decimal``
    (a tie may round either way), with at least `MIN_ROUNDED_DIGITS` significant digits written."""
    significant = len(str(abs(decimal / ulp).numerator))
    return significant >= MIN_ROUNDED_DIGITS and 2 * abs(exact - decimal) <= ulp


def numbers_close(a: Num, b: Num, rel_tol: float, rounding: bool = True, exact_integers: bool = True) -> bool:
    """Whether two parsed numbers are the same answer.

    - An integer exact value (``10001``) matches only itself: ``1e4``, ``10000.5`` and ``1.0001e4``
      are not 10001, however close. The sympy stage turns this off (``exact_integers=False``): its
      decimals are binary floats (``2.1 \\times 10`` is 21.000000000000000888), and their ``ulp`` comes
      from the written decimal places, not from an exponent.
    - A written decimal matches another exact value it rounds from (``rounding``: to its last
      written place, with at least two significant digits: ``0.33 ~ 1/3``, ``0.67 ~ 2/3``, but
      ``0.34 !~ 1/3``, ``0.66 !~ 2/3`` and ``0.3 !~ 1/3``). Callers pass ``rounding=False`` when the
      exact side is irrational: ``3.14`` is not an answer for pi.
    - Otherwise, when either side is a written decimal, they match if they agree to the coarser
      decimal's last written place *and* within ``rel_tol`` relative error (``0.33333 ~ 1/3``).

    >>> [numbers_close(parse_number(d), parse_number(r"\\frac13"), 1e-4) for d in ("0.33", "0.333", "0.34", "0.3")]
    [True, True, False, False]
    >>> [numbers_close(parse_number(d), parse_number("10001"), 1e-4) for d in ("1e4", "10001.0", "1.0001e4")]
    [False, True, True]
    """
    tol = Fraction(rel_tol)
    for x, x_ulp in _candidates(a):
        for y, y_ulp in _candidates(b):
            if x == y:
                return True
            if x_ulp is None and y_ulp is None:
                continue
            if (x_ulp is None) != (y_ulp is None):
                decimal, ulp, exact = (x, x_ulp, y) if x_ulp is not None else (y, y_ulp, x)
                if exact_integers and exact.denominator == 1:
                    continue
                if rounding and _rounded_from(decimal, ulp, exact):
                    return True
            ulp = max(u for u in (x_ulp, y_ulp) if u is not None)
            diff = abs(x - y)
            if diff < ulp and diff <= tol * max(abs(x), abs(y)):
                return True
    return False


# ---- arithmetic ------------------------------------------------------------------------------

_ARITHMETIC_SPELLINGS = ((re.compile(r"\\times|\\cdot|×|·"), "*"), (re.compile(r"\\div|÷"), "/"),
                         (re.compile(r"\\frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}"), r"((\1)/(\2))"))
_ARITHMETIC_RE = re.compile(r"^[\d\s+\-*/().]+$")
_ARITHMETIC_MAX_CHARS = 100
_ARITHMETIC_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _arithmetic(node: ast.AST) -> Fraction | None:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return Fraction(repr(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _arithmetic(node.operand)
        return None if value is None else (-value if isinstance(node.op, ast.USub) else value)
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC_OPS:
        left, right = _arithmetic(node.left), _arithmetic(node.right)
        if left is None or right is None or (isinstance(node.op, ast.Div) and right == 0):
            return None
        return _ARITHMETIC_OPS[type(node.op)](left, right)
    return None


def term_value(term: str) -> Num | None:
    r"""The value of one side of an equation when it is a number or plain arithmetic on numbers
    (``+ - * /``, ``\times``, ``\cdot``, ``\div``, ``\frac{}{}`` of such), else None. Evaluated exactly,
    without ``eval``, on at most 100 characters.

    >>> term_value(r"2 \times (3+4)").value, term_value(r"\frac{10}{4}").value, term_value("x+1"), term_value("2**9")
    (Fraction(14, 1), Fraction(5, 2), None, None)
    """
    if len(term) > QUICK_MAX_CHARS:
        return None
    number = parse_number(term)
    if number is not None or len(term) > _ARITHMETIC_MAX_CHARS:
        return number
    s = clean(term)
    for pattern, spelling in _ARITHMETIC_SPELLINGS:
        s = pattern.sub(spelling, s)
    if not _ARITHMETIC_RE.match(s) or "**" in s or "//" in s:
        return None
    try:
        tree = ast.parse(s.strip(), mode="eval")
    except SyntaxError:
        return None
    value = _arithmetic(tree.body)
    return None if value is None else Num(value)


# ---- flat collections of numbers ---------------------------------------------------------------

_INFINITY_RE = re.compile(r"^([-+]?)\s*(?:\\infty|\\inf|∞|infinity|inf|oo)$")
# `(1,000, 2)`: a comma followed by exactly three digits may be a thousands separator; leave it to sympy.
_GROUPING_RE = re.compile(r"\d,\d{3}(?![\d.])")
_OPEN_SET, _CLOSE_SET = "\\{", "\\}"


@dataclass(frozen=True)
class Collection:
    """A comma-separated answer whose items are all plain numbers or infinities.

    ``brackets`` is the written pair: ``"()"``, ``"[)"``, ... for points, tuples and intervals, ``"{}"``
    for a set, ``""`` for a bare list. ``items`` holds `Num` values, or ``"+inf"``/``"-inf"``."""

    brackets: str
    items: tuple[Num | str, ...]

    @property
    def ordered(self) -> bool:
        return self.brackets not in ("", "{}")


def _item(text: str) -> Num | str | None:
    m = _INFINITY_RE.match(text.strip())
    if m:
        return "-inf" if m.group(1) == "-" else "+inf"
    return parse_number(text)


def collection(answer: str) -> Collection | None:
    r"""``answer`` (already `clean`) read as a flat collection of at least two numbers, else None.

    >>> c = collection(r"(-\infty, \frac{1}{2}]"); c.brackets, c.items[0], c.items[1].value
    ('(]', '-inf', Fraction(1, 2))
    >>> collection("3, 5, 7").ordered, collection(r"\{1,2\}").brackets, collection("-1;-2").items[1].value
    (False, '{}', Fraction(-2, 1))
    >>> collection("(x, 2)"), collection("1,2;3")
    (None, None)
    """
    s = answer.strip()
    if s.startswith(_OPEN_SET) and s.endswith(_CLOSE_SET):
        brackets, inner = "{}", s[len(_OPEN_SET) : -len(_CLOSE_SET)]
    elif s[:1] == "{" and s[-1:] == "}":
        brackets, inner = "{}", s[1:-1]  # a TeX group around a list: latex2sympy reads it as a set
    elif s[:1] in "([" and s[-1:] in ")]":
        brackets, inner = s[0] + s[-1], s[1:-1]
    else:
        brackets, inner = "", s
    # `1;2;3` separates items like commas; a mix (`1,2;3`) is a list of tuples, not a flat collection.
    parts = inner.split(";") if ";" in inner and "," not in inner else inner.split(",")
    if len(parts) < 2 or _GROUPING_RE.search(inner.replace(" ", "")):
        return None
    items = tuple(_item(part) for part in parts)
    if any(item is None for item in items):
        return None
    return Collection(brackets, items)  # type: ignore[arg-type]


def _items_close(a: Num | str, b: Num | str, rel_tol: float) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return numbers_close(a, b, rel_tol)


def _unordered_match(gold: tuple, pred: tuple, rel_tol: float) -> bool:
    # Greedy matching is exact here: `_has_near_duplicates` excluded items that could match twice.
    left = list(pred)
    for g in gold:
        hit = next((i for i, p in enumerate(left) if _items_close(g, p, rel_tol)), None)
        if hit is None:
            return False
        left.pop(hit)
    return not left


def _has_near_duplicates(items: tuple, rel_tol: float) -> bool:
    return any(_items_close(a, b, rel_tol) for i, a in enumerate(items) for b in items[i + 1 :])


def collection_verdict(gold: Collection, pred: Collection, rel_tol: float) -> bool | None:
    """Compare two numeric collections item by item with the scalar rule (`numbers_close`), so interval
    endpoints and tuple entries get the same decimal tolerance as a lone number. None where sympy's
    reading differs from a plain item comparison: a bracketed answer against a bare list or set, and
    sets with repeated items (which a set collapses).

    Two items in brackets are an interval (or a point): both brackets must match, as open and closed
    ends differ. Three or more are a tuple, whatever the bracket style (latex2sympy reads both alike).

    >>> collection_verdict(collection("(0.6,2.6667]"), collection(r"(\\frac35,\\frac83]"), 1e-4)
    True
    >>> collection_verdict(collection("[1,2]"), collection("[1,2)"), 1e-4), collection_verdict(
    ...     collection("7, 5, 3"), collection(r"\\{3,5,7\\}"), 1e-4)
    (False, True)
    """
    if gold.ordered != pred.ordered:
        return None
    if not gold.ordered:
        if _has_near_duplicates(gold.items, rel_tol) or _has_near_duplicates(pred.items, rel_tol):
            return None
        return _unordered_match(gold.items, pred.items, rel_tol)
    if len(gold.items) != len(pred.items):
        return False
    if len(gold.items) == 2 and gold.brackets != pred.brackets:
        return False
    return all(_items_close(g, p, rel_tol) for g, p in zip(gold.items, pred.items))


# Operators as `canonical` spells them; the space after `\\leq` survives only before a letter.
_RELATION_SPLIT_RE = re.compile(r"(\\leq|\\geq|<|>)")
_ASCENDING = {"<": ")", "\\leq": "]"}
_DESCENDING = {">": ")", "\\geq": "]"}
_OPENING = {")": "(", "]": "["}
_MEMBER_RE = re.compile(r"^([A-Za-z])\\in(.+)$")


def _bounded(lo: Num | str, lo_close: str, hi_close: str, hi: Num | str) -> Collection:
    return Collection(_OPENING[lo_close] + hi_close, (lo, hi))


def _one_sided(var_first: bool, op: str, bound: Num | str) -> Collection | None:
    # `x < 5` and `5 > x` are (-oo, 5); `x >= 5` and `5 <= x` are [5, oo).
    below = (op in _ASCENDING) == var_first
    close = _ASCENDING.get(op) or _DESCENDING[op]
    return _bounded("-inf", ")", close, bound) if below else _bounded(bound, close, ")", "+inf")


def interval(answer: str) -> tuple[str | None, Collection] | None:
    r"""``(variable, interval)`` for an inequality in one variable with plain-number bounds
    (``-2 \le x < 7``, ``x > 5``) or a membership (``x \in [-2, 7]``); None for anything else.
    The interval is a two-item `Collection` with ``"+inf"``/``"-inf"`` for a missing bound.

    >>> var, iv = interval(canonical(r"-2 \le x < 7")); var, iv.brackets, iv.items[1].value
    ('x', '[)', Fraction(7, 1))
    >>> interval(canonical("5 <= y"))[1].brackets, interval("x > y"), interval(canonical("x \\neq 3"))
    ('[)', None, None)
    """
    member = _MEMBER_RE.match(answer)
    if member:
        found = collection(member.group(2))
        return (member.group(1), found) if found and found.ordered and len(found.items) == 2 else None
    parts = _RELATION_SPLIT_RE.split(answer)
    if len(parts) == 3:
        left, op, right = (part.strip() for part in parts)
        var_first = bool(re.fullmatch(r"[A-Za-z]", left))
        var, bound = (left, _item(right)) if var_first else (right, _item(left))
        if bound is None or not re.fullmatch(r"[A-Za-z]", var):
            return None
        return var, _one_sided(var_first, op, bound)
    if len(parts) == 5 and re.fullmatch(r"[A-Za-z]", parts[2].strip()):
        lo, op1, var, op2, hi = (part.strip() for part in parts)
        a, b = _item(lo), _item(hi)
        if a is None or b is None:
            return None
        if op1 in _ASCENDING and op2 in _ASCENDING:
            return var, _bounded(a, _ASCENDING[op1], _ASCENDING[op2], b)
        if op1 in _DESCENDING and op2 in _DESCENDING:
            return var, _bounded(b, _DESCENDING[op2], _DESCENDING[op1], a)
    return None


def interval_verdict(gold: str, pred: str, rel_tol: float) -> bool | None:
    """Compare inequalities, memberships and plain intervals as intervals (`collection_verdict` on the
    endpoints). None unless at least one side is an inequality or membership and both are intervals, or
    when both name a variable and the names differ (math-verify's solver decides those)."""
    g, p = interval(gold), interval(pred)
    if g is None and p is None:
        return None
    g = g or _plain_interval(gold)
    p = p or _plain_interval(pred)
    if g is None or p is None or (g[0] and p[0] and g[0] != p[0]):
        return None
    return collection_verdict(g[1], p[1], rel_tol)


def _plain_interval(answer: str) -> tuple[None, Collection] | None:
    found = collection(answer)
    return (None, found) if found is not None and found.ordered and len(found.items) == 2 else None


# ---- letters and words -----------------------------------------------------------------------

_CHOICE_GOLD_RE = re.compile(r"^\(?([A-E])\)?$")
_CHOICE_PRED_RE = re.compile(r"^(?:option\s*|choice\s*)?\(?([A-Ea-e])\)?(?:[\s.:)]|$)", re.IGNORECASE)
# After the letter a prediction may restate the option (`(B) 12`), but not name another one: `(B) or
# (C)`, `B C`, `B, D`.
_OTHER_CHOICE_RE = re.compile(r"\([A-Ea-e]\)|(?<![A-Za-z'])[A-E](?![A-Za-z'])")
_WORDS_RE = re.compile(r"^[A-Za-z][A-Za-z' \-]*[A-Za-z]$")


def choice_letter(answer: str, *, is_gold: bool) -> str | None:
    """The multiple-choice letter A-E. A gold answer must be the bare letter (``B``, ``(B)``,
    ``\\text{(B)}``); a prediction may go on after it (``(B) 12``), but not name another letter.

    >>> choice_letter(r"\\text{(C)}", is_gold=True), choice_letter("(c) 42 apples", is_gold=False)
    ('C', 'C')
    >>> choice_letter("(B) or (C)", is_gold=False), choice_letter("B C", is_gold=False)
    (None, None)
    """
    s = unwrap_text(clean(answer)).strip()
    m = (_CHOICE_GOLD_RE if is_gold else _CHOICE_PRED_RE).match(s)
    if m is None or (not is_gold and _OTHER_CHOICE_RE.search(s, m.end())):
        return None
    return m.group(1).upper()


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
    canonical_g, canonical_p = canonical(g), canonical(p)
    # Not a comparison with every space removed: `1 4/5` is 9/5, not 14/5, and `1 2` is not 12.
    if canonical_g == canonical_p:
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
    gn, pn = parse_number(g, any_unit=True), parse_number(p)
    # Only when the other side is a number is a lone comma read as a European decimal point: `3,5` is
    # otherwise the list {3, 5}.
    if gn is None and pn is not None:
        gn = decimal_comma(g)
    elif pn is None and gn is not None:
        pn = decimal_comma(p)
    if gn is not None and pn is not None:
        return numbers_close(gn, pn, rel_tol)
    gc, pc = collection(g), collection(p)
    if gc is not None and pc is not None:
        return collection_verdict(gc, pc, rel_tol)
    return interval_verdict(canonical_g, canonical_p, rel_tol)
