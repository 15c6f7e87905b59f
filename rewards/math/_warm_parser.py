"""Forkserver preload that warms latex2sympy's parser; imported by nothing else.

latex2sympy's ANTLR parser builds its prediction DFA lazily, at class level: the first answers of each
shape a process parses cost several times more than later ones. `rewards.math.pool` names this module in
``set_forkserver_preload``, the only hook a forkserver offers (it imports modules, nothing more), so the
forkserver parses a spread of answer shapes once and every verifier worker forked from it, replacements
for killed workers included, starts warm at the price of a fork. That is why this is the one module in
r1kit whose import does work.
"""

from __future__ import annotations

from rewards.math.equivalence import equivalent, to_sympy

# One answer per construct the grammar predicts differently: numbers, fractions, roots, powers, pi,
# polynomials, intervals and unions, tuples, sets, +-, matrices, complex numbers, equations, relations,
# trig and logs, subscripts, percent, factorials, binomials, absolute values.
_CORPUS = (
    r"\frac{1}{2}", r"-\frac{3}{8}", r"2\sqrt{3}", r"\sqrt[3]{8}", r"288\pi", r"1.5 \times 10^{3}", r"(r+5)^2",
    r"x^3+3x-6", r"\frac{11+9a}{20}", r"(2,\infty)", r"(-\infty, 0]", r"(0,9) \cup (9,36)", r"[-2,7)",
    r"(15,-29)", r"\{1,2\}", r"1 \pm \sqrt{19}", r"3, 5, 7", r"\begin{pmatrix} -1 & 0 \\ 0 & -1 \end{pmatrix}",
    r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"-2 + 7i", r"5x - 7y + 11z + 4 = 0", r"y = 2x + 3",
    r"x \in [-2,7]", r"-2 \le x \le 7", r"x \geq 5", r"x \neq 3", r"2 \sin b \cos a", r"\tan^2(y)+1",
    r"\log_2 8", r"e^{x}", r"\frac{\pi r}{h+r}", r"f(2) < f(1) < f(4)", r"10^{\frac{-5+\sqrt{13}}{6}}",
    r"x_{1}", r"50\%", r"5!", r"\binom{5}{2}", r"|x-2|", r"\frac{\sqrt{3}}{3}", r"\infty",
)


def _warm() -> None:
    for answer in _CORPUS:
        to_sympy(answer)
    # The comparator's own first calls (simplify, set and matrix equality) are warmed by a few checks.
    equivalent("(r+5)(r+5)", "(r+5)^2", 1e-4)
    equivalent(r"\{2,1\}", r"\{1,2\}", 1e-4)
    equivalent(r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", 1e-4)
    # ... and the equation path (random-point ratios, the linear-equation check).
    equivalent("2x + 4y = 6", "x = 3 - 2y", 1e-4)
    equivalent("2x + 4y = 6", "x = 3 + 2y", 1e-4)
    # Parsed trees stay out of the workers' caches: they should only hold their own answers.
    to_sympy.cache_clear()


_warm()
