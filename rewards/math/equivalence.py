"""Full equivalence check: string rules first, then sympy via latex2sympy2_extended and math-verify.

This module imports sympy and is meant to run inside a verifier worker process (`rewards.math.pool`),
which enforces the deadline; nothing here is bounded in time on adversarial input.

What we take from math-verify: LaTeX normalization (units, ``\\text``, malformed ``\\frac12``) and its
structural comparator ``sympy_expr_eq`` (sets vs tuples, intervals, relations, matrices, symbolic
simplification). What we do differently: we parse bare answers directly (math-verify's ``parse`` finds
nothing in LaTeX without ``$...$``), compare plain numbers with our own decimal-precision rule, and run
without its ``signal.alarm`` timeout.
"""

from __future__ import annotations

import re
from fractions import Fraction
from functools import lru_cache

import sympy
from latex2sympy2_extended.latex2sympy2 import NormalizationConfig, latex2sympy, normalize_latex
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


@lru_cache(maxsize=4096)
def to_sympy(answer: str) -> sympy.Basic | sympy.MatrixBase:
    """Parse a cleaned LaTeX/plain answer; cached because a GRPO group shares one gold answer."""
    latex = normalize_latex(answer, _LATEX_NORMALIZATION)
    return latex2sympy(
        latex, is_real=not should_treat_as_complex(latex), convert_degrees=False, normalization_config=None
    )


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
    return g is not None and p is not None and numbers_close(g, p, rel_tol)


def sympy_equivalent(prediction: str, gold: str, rel_tol: float) -> bool:
    """Parse both sides with latex2sympy and compare. Unparseable input is "not equivalent"."""
    g, p = clean(gold), clean(prediction)
    try:
        gold_expr, pred_expr = to_sympy(g), to_sympy(p)
        if _is_scalar(gold_expr) and _is_scalar(pred_expr):
            return _scalars_equal(gold_expr, pred_expr, g, p, rel_tol)
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
