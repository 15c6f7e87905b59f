"""Full equivalence check: string rules first, then sympy via latex2sympy2_extended and math-verify.

This module imports sympy and is meant to run inside a verifier worker process (`rewards.math.pool`),
which enforces the deadline; nothing here is bounded in time on adversarial input.

What we take from math-verify: LaTeX normalization (units, ``\\text``, malformed ``\\frac12``) and its
structural comparator ``sympy_expr_eq`` (sets vs tuples, intervals, relations, matrices, symbolic
simplification). What we do differently: we parse bare answers directly (math-verify's ``parse`` finds
nothing in LaTeX without ``$...$``), parse SLL-first (`_SLLConverter`), compare plain numbers with our
own decimal-precision rule, settle symbolic expressions and equations by evaluating them at random points
before falling back to its ``simplify`` (`numeric_identity`, `proportional_equations`), and run without
its ``signal.alarm`` timeout.
"""

from __future__ import annotations

import random
import re
from fractions import Fraction
from functools import lru_cache

import sympy
from antlr4.atn.PredictionMode import PredictionMode
from antlr4.error.ErrorListener import ErrorListener
from latex2sympy2_extended.latex2sympy2 import NormalizationConfig, _Latex2Sympy, normalize_latex
from math_verify.grader import should_treat_as_complex, sympy_expr_eq

from rewards.math.normalize import Num, clean, numbers_close, quick_verdict

_LATEX_NORMALIZATION = NormalizationConfig(
    basic_latex=True, units=True, malformed_operators=True, nits=True, boxed="all", equations=False
)
_DECIMAL_LITERAL_RE = re.compile(r"\d*\.(\d+)")
# math-verify's own default: floats inside structures (sets, matrices) agree to 6 decimals.
_FLOAT_ROUNDING = 6
_NUMERIC_PRECISION = 15
_EXACT_DIGITS = 50


class _SLLSyntaxError(Exception):
    """The SLL pass could not parse the input; only a full LL pass can tell whether it is valid."""


class _RaiseSLLSyntaxError(ErrorListener):
    def syntaxError(self, recognizer, offendingSymbol, line, column, msg, e):
        raise _SLLSyntaxError(msg)


# A numeral as the grammar's postfix token: `88`, `3.5`, `1,000`.
_NUMERAL_RE = re.compile(r"[\d.,]+")


class _JuxtaposedNumerals(Exception):
    """Two numerals side by side (`88 38`): not a number in any notation."""


class _Converter(_Latex2Sympy):
    """latex2sympy's converter without its mixed-number shortcut for integers.

    latex2sympy reads an integer followed by any positive rational as a mixed number, and an integer is
    a rational: `88 38`, `99` newline `12` and `2(3)` became 126, 111 and 5, so a policy that wrote the two
    operands of `88 + 38` scored as if it had added them. Here only a proper fraction makes a mixed
    number (`2 \\frac{1}{2}`), two bare numerals side by side are an error, and other juxtapositions
    multiply (`2(3)` is 6).
    """

    def convert_postfix_list(self, arr, i=0):
        if i + 1 < len(arr) and all(_NUMERAL_RE.fullmatch(arr[j].getText()) for j in (i, i + 1)):
            raise _JuxtaposedNumerals(f"{arr[i].getText()} {arr[i + 1].getText()}")
        res = self.convert_postfix(arr[i])
        if isinstance(res, list) and len(res) == 1:  # `\frac{d}{dx}`: differentiate what follows
            if i == len(arr) - 1:
                raise ValueError("a derivative operator with nothing to differentiate")
            return sympy.Derivative(self.convert_postfix_list(arr, i + 1), res[0])
        if i == len(arr) - 1 or not isinstance(res, (sympy.Expr, sympy.MatrixBase)):
            return res
        rh = self.convert_postfix_list(arr, i + 1)
        if getattr(res, "is_Matrix", False) or getattr(rh, "is_Matrix", False):
            return self.mat_mul_flat(res, rh)
        if getattr(res, "is_Integer", False) and getattr(rh, "is_Rational", False) and 0 < rh < 1:
            return res - rh if res < 0 else res + rh
        return self.mul_flat(res, rh)


class _SLLConverter(_Converter):
    """`_Converter` with its ANTLR parser in SLL prediction mode.

    Profiling put about half of a warm worker's time in the parser's full-context (LL) prediction, which
    ANTLR does not cache. ANTLR's two-stage strategy avoids it: SLL prediction either yields exactly the parse
    tree LL would (ANTLR's PredictionMode documentation guarantees this) or reports a syntax error, and
    only then does `_parse` run the ordinary LL parser. Lexer errors are real errors in both modes and
    keep latex2sympy's own listener.
    """

    def create_parser(self, latex_str: str):
        parser = super().create_parser(latex_str)
        parser._interp.predictionMode = PredictionMode.SLL
        parser.removeErrorListeners()
        parser.addErrorListener(_RaiseSLLSyntaxError())
        return parser


def _parse(latex: str, is_real: bool) -> sympy.Basic | sympy.MatrixBase:
    try:
        return _SLLConverter(is_real=is_real).parse(latex)
    except _SLLSyntaxError:
        # Not necessarily an error: some valid input (`x^2`, `a_{1} = 5`) meets an SLL conflict in
        # latex2sympy's grammar, and only LL can tell.
        return _Converter(is_real=is_real).parse(latex)


@lru_cache(maxsize=4096)
def to_sympy(answer: str) -> sympy.Basic | sympy.MatrixBase:
    """Parse a cleaned LaTeX/plain answer; cached because a GRPO group shares one gold answer."""
    latex = normalize_latex(answer, _LATEX_NORMALIZATION)
    return _parse(latex, is_real=not should_treat_as_complex(latex))


def _ulp(answer: str) -> Fraction | None:
    places = [len(m.group(1)) for m in _DECIMAL_LITERAL_RE.finditer(answer)]
    return Fraction(1, 10 ** max(places)) if places else None


def _is_scalar(expr) -> bool:
    return isinstance(expr, sympy.Expr) and expr.is_number and not isinstance(expr, sympy.Tuple)


def _as_num(expr: sympy.Expr, answer: str) -> Num | None:
    value = sympy.N(expr, _EXACT_DIGITS)
    if not value.is_real or not value.is_finite:
        return None
    return Num(Fraction(str(value)), _ulp(answer) if expr.has(sympy.Float) else None)


def _scalars_equal(gold: sympy.Expr, pred: sympy.Expr, gold_str: str, pred_str: str, rel_tol: float) -> bool:
    if not gold.has(sympy.Float) and not pred.has(sympy.Float):
        # Exact vs exact (sqrt(12) vs 2*sqrt(3)): a 50-digit evaluation of the difference is decisive
        # and far cheaper than simplify().
        diff = sympy.N(gold - pred, _EXACT_DIGITS)
        scale = max(1, abs(sympy.N(gold, 15)))
        return bool(abs(diff) <= scale * sympy.Float(10) ** (-(_EXACT_DIGITS - 10)))
    g, p = _as_num(gold, gold_str), _as_num(pred, pred_str)
    # Rounding-aware matching only against a rational value: `0.33` stands for 1/3, `3.14` is not pi.
    rational = all(isinstance(e, sympy.Rational) or e.has(sympy.Float) for e in (gold, pred))
    return g is not None and p is not None and numbers_close(g, p, rel_tol, rounding=rational, exact_integers=False)


# ---- probabilistic identity testing ---------------------------------------------------------------
#
# math-verify settles symbolic pairs with `simplify(gold - pred)`, which costs 10-500 ms. Evaluating both
# sides at random points costs about a millisecond and decides almost every pair: two different
# rational functions of total degree d agree at a random point with probability <= d / |S|
# (Schwartz-Zippel; |S| ~ 2^50 for random doubles), and two different analytic expressions agree only
# on a set of measure zero, so a false "equal" from 3+ points needs that to happen at every point; the
# 40-digit evaluation keeps rounding ~20 orders of magnitude below the "zero" threshold. What numbers
# cannot settle (mixed verdicts, tiny non-zero differences, unsupported functions) still goes to
# math-verify's comparator.

_PROBE_DIGITS = 40
_PROBE_POINTS = 4
_PROBE_TRIES = 8
# Relative difference below which a point counts as "equal": exact inputs evaluated to 40 digits
# differ by ~1e-38 when equal; a Float literal (15 significant digits) can carry ~1e-15 of its own.
_ZERO_EXACT = sympy.Float("1e-25")
_ZERO_WITH_FLOATS = sympy.Float("1e-12")
# Above this a point counts as "different"; between the two thresholds it settles nothing.
_NONZERO = sympy.Float("1e-8")
# Node types whose numeric value at a point is what sympy's simplify reasons about. Anything else
# (undefined functions f(x), sums, integrals, factorials of symbols, Piecewise) keeps the slow path.
_PROBE_FUNCTIONS = (
    sympy.exp,
    sympy.log,
    sympy.sin,
    sympy.cos,
    sympy.tan,
    sympy.cot,
    sympy.sec,
    sympy.csc,
    sympy.asin,
    sympy.acos,
    sympy.atan,
    sympy.sinh,
    sympy.cosh,
    sympy.tanh,
    sympy.Abs,
)
_PROBE_NODES = (
    sympy.Add,
    sympy.Mul,
    sympy.Pow,
    sympy.Symbol,
    sympy.Number,
    sympy.NumberSymbol,
    sympy.core.numbers.ImaginaryUnit,
    *_PROBE_FUNCTIONS,
)


def _probeable(expr) -> bool:
    if not isinstance(expr, sympy.Expr) or isinstance(expr, sympy.Symbol) or not expr.free_symbols:
        # A bare symbol keeps math-verify's rules for names (`\text{ab}` vs `ab`, `e` vs E).
        return False
    return all(isinstance(node, _PROBE_NODES) for node in sympy.preorder_traversal(expr))


def _value_at(expr: sympy.Expr, point: dict) -> sympy.Expr | None:
    value = expr.evalf(_PROBE_DIGITS, subs=point)
    re_part, im_part = value.as_real_imag()
    if not (isinstance(re_part, sympy.Number) and isinstance(im_part, sympy.Number)):
        return None  # unevaluated, infinite or nan: a singularity, try another point
    if not (re_part.is_finite and im_part.is_finite):
        return None
    return value


def _probe_values(a: sympy.Expr, b: sympy.Expr, seed: str) -> list[tuple[sympy.Expr, sympy.Expr]]:
    """Values of ``a`` and ``b`` at up to `_PROBE_POINTS` random real points where both are finite."""
    rng = random.Random(seed)  # seeded by the pair: the same pair always gets the same verdict
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    values: list[tuple[sympy.Expr, sympy.Expr]] = []
    for _ in range(_PROBE_TRIES):
        # Both signs and magnitudes away from 0 and 1, where special values (log 1, x^0) hide differences.
        point = {x: sympy.Float(rng.choice((-1, 1)) * rng.uniform(0.3, 2.7), _PROBE_DIGITS) for x in symbols}
        va, vb = _value_at(a, point), _value_at(b, point)
        if va is not None and vb is not None:
            values.append((va, vb))
            if len(values) == _PROBE_POINTS:
                break
    return values


def _relative_gap(va: sympy.Expr, vb: sympy.Expr) -> sympy.Expr:
    scale = max(abs(va), abs(vb))
    return abs(va - vb) / scale if scale != 0 else sympy.Float(0)


def numeric_identity(a: sympy.Expr, b: sympy.Expr) -> bool | None:
    """True if ``a - b`` is ~0 at every probe point, False if it is clearly non-zero at every one,
    None when the points disagree or too few could be evaluated (the caller then uses simplify).

    >>> x, y = sympy.symbols("x y")
    >>> numeric_identity((x + 1)**2, x**2 + 2*x + 1), numeric_identity(sympy.sin(x)**2, 1 - sympy.cos(x)**2)
    (True, True)
    >>> numeric_identity(x + y, x - y), numeric_identity(sympy.sqrt(x**2), x)
    (False, None)
    """
    if not (_probeable(a) and _probeable(b)):
        return None
    values = _probe_values(a, b, f"{a}|{b}")
    if len(values) < _PROBE_POINTS - 1:
        return None
    zero = _ZERO_WITH_FLOATS if a.has(sympy.Float) or b.has(sympy.Float) else _ZERO_EXACT
    gaps = [_relative_gap(va, vb) for va, vb in values]
    if all(gap <= zero for gap in gaps):
        return True
    if all(gap >= _NONZERO for gap in gaps):
        return False
    return None


def proportional_equations(gold: sympy.Eq, pred: sympy.Eq) -> bool:
    """Whether ``lhs - rhs`` of the two equations differ by a non-zero constant factor at every probe
    point (``2x + 4y = 6`` and ``x = 3 - 2y`` have the same solutions). False means "not shown": other
    equivalent forms (``(x-1)^2 = 0`` vs ``x = 1``) are left to math-verify's solver.

    >>> x, y = sympy.symbols("x y")
    >>> proportional_equations(sympy.Eq(2*x + 4*y, 6), sympy.Eq(x, 3 - 2*y)), proportional_equations(
    ...     sympy.Eq(x, 1), sympy.Eq(y, 1))
    (True, False)
    """
    f, h = gold.lhs - gold.rhs, pred.lhs - pred.rhs
    if not (_probeable(f) and _probeable(h)):
        return False
    values = _probe_values(f, h, f"{f}|{h}")
    if len(values) < _PROBE_POINTS - 1 or any(vh == 0 or vf == 0 for vf, vh in values):
        return False
    zero = _ZERO_WITH_FLOATS if f.has(sympy.Float) or h.has(sympy.Float) else _ZERO_EXACT
    ratios = [vf / vh for vf, vh in values]
    return all(_relative_gap(r, ratios[0]) <= zero for r in ratios[1:])


def _is_linear(expr: sympy.Expr) -> bool:
    symbols = sorted(expr.free_symbols, key=str)
    return bool(symbols) and expr.is_polynomial(*symbols) and sympy.Poly(expr, *symbols).total_degree() == 1


def _fast_symbolic(gold, pred) -> bool | None:
    if isinstance(gold, sympy.Eq) and isinstance(pred, sympy.Eq):
        if proportional_equations(gold, pred):
            return True
        # Two linear equations have the same solutions (a line, a plane) only if they are proportional;
        # math-verify would reach the same False through `solve`, 50-100 ms later.
        f, h = gold.lhs - gold.rhs, pred.lhs - pred.rhs
        return False if _probeable(f) and _probeable(h) and _is_linear(f) and _is_linear(h) else None
    return numeric_identity(gold, pred)


def sympy_equivalent(prediction: str, gold: str, rel_tol: float) -> bool:
    """Parse both sides with latex2sympy and compare. Unparseable input is "not equivalent"."""
    g, p = clean(gold), clean(prediction)
    try:
        gold_expr, pred_expr = to_sympy(g), to_sympy(p)
        if _is_scalar(gold_expr) and _is_scalar(pred_expr):
            return _scalars_equal(gold_expr, pred_expr, g, p, rel_tol)
        fast = _fast_symbolic(gold_expr, pred_expr)
        if fast is not None:
            return fast
        return bool(
            sympy_expr_eq(
                gold_expr,
                pred_expr,
                _FLOAT_ROUNDING,
                _NUMERIC_PRECISION,
                allow_set_relation_comp=True,
                strict=True,
            )
        )
    # latex2sympy and sympy signal malformed or unsupported input with arbitrary exception types
    # (ANTLR errors, TypeError, RecursionError, MemoryError under the worker's rlimit, ...): for a
    # verifier every one of them means the prediction could not be shown equal to the gold answer.
    except Exception:  # noqa: BLE001 - see the comment above
        return False


def equivalent(prediction: str, gold: str, rel_tol: float) -> bool:
    """Whether the bare answer ``prediction`` equals the bare answer ``gold`` (no deadline: call it
    through `rewards.math.verify`).

    >>> equivalent("(r+5)(r+5)", "(r+5)^2", 1e-4), equivalent(r"2\\sqrt{3}", r"\\sqrt{12}", 1e-4)
    (True, True)
    >>> equivalent("(2,1)", "(1,2)", 1e-4)
    False
    """
    verdict = quick_verdict(prediction, gold, rel_tol)
    if verdict is not None:
        return verdict
    return sympy_equivalent(prediction, gold, rel_tol)
