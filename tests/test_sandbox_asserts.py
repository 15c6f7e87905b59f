"""Host side of assert judging (`rewards/sandbox/asserts.py`), no sandbox needed: how each assert form
is split between the sandbox and the host, and how the host judges reported records, including
malformed, forged and oversized ones (the records come from an untrusted process)."""

from __future__ import annotations

import ast

import pytest

from rewards.sandbox.asserts import judge_records, plan_test, shadowed_builtins


def _split(source: str, shadowed: frozenset = frozenset()) -> list[tuple[list[str], str]]:
    """[(leaf sources sent to the sandbox, host tree)] per assert of `source`."""
    plan = plan_test(source, shadowed)
    sandbox = ast.parse(plan.source)
    leaves = [ast.unparse(n.body[0].value.elts[0]) for n in ast.walk(sandbox) if isinstance(n, ast.Try)]
    out, k = [], 0
    for check in plan.checks:
        out.append((leaves[k : k + check.n_leaves], ast.unparse(check.tree)))
        k += check.n_leaves
    return out


@pytest.mark.parametrize(
    "source,leaves,host",
    [
        ("assert f(3) == [1, 2]", ["f(3)"], "_r1kit_v0 == [1, 2]"),
        ("assert abs(f(1.33) - 0.33) < 1e-06", ["f(1.33)"], "abs(_r1kit_v0 - 0.33) < 1e-06"),
        ("assert math.isclose(f(10), 4188.79, rel_tol=0.001)", ["f(10)"], "math.isclose(_r1kit_v0, 4188.79, rel_tol=0.001)"),
        ("assert f(1) is None", ["f(1)"], "_r1kit_v0 is None"),
        ("assert f(x)", ["True if f(x) else False"], "_r1kit_v0"),
        ("assert not f(x)", ["True if f(x) else False"], "not _r1kit_v0"),
        ("assert set(f(x)) == set([1, 2])", ["set(f(x))"], "_r1kit_v0 == set([1, 2])"),
        ("assert sorted(f(1), key=lambda t: t[1]) == [2]", ["sorted(f(1), key=lambda t: t[1])"], "_r1kit_v0 == [2]"),
        ("assert f(1)[0] == 'a'", ["f(1)"], "_r1kit_v0[0] == 'a'"),
        ("assert f(1).startswith('a')", ["f(1)"], "_r1kit_v0.startswith('a')"),
        ("assert f(1) == g(2)", ["f(1)", "g(2)"], "_r1kit_v0 == _r1kit_v1"),
        ("assert True", [], "True"),
        ("import sys\nassert size(t) == sys.getsizeof((1, 2))", ["size(t)"], "_r1kit_v0 == sys.getsizeof((1, 2))"),
        # A name the test binds is the test's, not the host's builtin (HumanEval/38).
        ("str = 'ab'\nassert f(str) == str", ["f(str)", "str"], "_r1kit_v0 == _r1kit_v1"),
        # all()/any() over a comprehension: one row of leaves per element, the element judged on the host.
        ("assert all(f(x) == x for x in xs if x)", ["[(f(x), x) for x in xs if x]"],
         "all((_r1kit_row[0] == _r1kit_row[1] for _r1kit_row in _r1kit_v0))"),
        ("assert not any([g(s) for s in 'ab'])", ["[(True if g(s) else False,) for s in 'ab']"],
         "not any((_r1kit_row[0] for _r1kit_row in _r1kit_v0))"),
    ],
)  # fmt: skip
def test_split(source, leaves, host):
    assert _split(source) == [(leaves, host)]


def test_a_builtin_the_program_defines_is_called_only_when_nothing_else_is():
    shadowed = shadowed_builtins("def sum(a, b):\n    return a + b\nabs = 3\ndef set(x): return x")
    assert shadowed == {"sum", "abs"}  # conversions such as set() are never handed to the program
    assert _split("assert sum(10, 15) == 25", shadowed) == [(["sum(10, 15)"], "_r1kit_v0 == 25")]
    assert _split("assert abs(f(1) - 0.3) < 1e-06", shadowed) == [(["f(1)"], "abs(_r1kit_v0 - 0.3) < 1e-06")]


def test_required_asserts_are_the_unconditional_ones():
    plan = plan_test("def check(c):\n    assert c(1) == 1\n    for i in range(3):\n        assert c(i) == i\n    if c:\n        assert c(2)\ncheck(f)\nassert f(0) == 0\n")
    assert plan.required == {0, 3}


REC = '[0,[[3]]]\n'


@pytest.mark.parametrize(
    "records,status",
    [
        (REC, "ok"),
        ('[0,[[4]]]\n', "wrong_answer"),
        ('[0,[[3.0]]]\n', "ok"),  # 3.0 == 3 on the host, as in Python
        ('[0,[["3"]]]\n', "wrong_answer"),
        ('[0,[[]]]\n', "wrong_answer"),  # the leaf raised
        ('[0,[{"bad":"a value of a non-builtin type"}]]\n', "wrong_answer"),
        ("", "error"),  # the assert never ran
        (REC + REC, "error"),  # a required assert ran twice (forged or replayed)
        ('[0,[[3]]]', "error"),  # cut off
        ('[7,[[3]]]\n', "wrong_answer"),  # unknown assert
        ('[0,[[3],[4]]]\n', "wrong_answer"),  # wrong number of leaves
        ("not json\n", "wrong_answer"),
        ('[0,[[["x",[]]]]]\n', "wrong_answer"),  # unknown tag
        ('[0,[[' + "9" * 5000 + ']]]\n', "wrong_answer"),  # past the int digit limit
        ('[0,[' + "[" * 3000 + "]" * 3000 + ']]\n', "wrong_answer"),  # nested too deep to parse
    ],
)  # fmt: skip
def test_judge_records(records, status):
    assert judge_records(plan_test("assert f(1, 2) == 3"), records)[0] == status


@pytest.mark.parametrize(
    "source,value",
    [
        ("assert 2 ** f(1) == 0", "100000000"),  # the host refuses a huge power instead of computing it
        ("assert [0] * f(1) == []", "100000000"),
        ("assert 1 << f(1) == 0", "100000000"),
        ("assert list(range(f(1))) == []", "100000000"),
    ],
)
def test_values_cannot_make_the_host_compute_forever(source, value):
    assert judge_records(plan_test(source), f"[0,[[{value}]]]\n")[0] == "wrong_answer"


@pytest.mark.parametrize(
    "rows,status",
    [
        ('["l",[["t",[1,1]],["t",[2,2]]]]', "ok"),
        ('["l",[["t",[1,1]],["t",[2,3]]]]', "wrong_answer"),
        ('["l",[]]', "ok"),  # all() of nothing, as in Python
        ('["l",[["l",[1,1]]]]', "wrong_answer"),  # rows must be tuples
        ('["t",[]]', "wrong_answer"),
    ],
)
def test_all_over_comprehension_rows(rows, status):
    assert judge_records(plan_test("assert all(f(x) == x for x in xs)"), f"[0,[[{rows}]]]\n")[0] == status


def test_decoded_values_keep_their_types():
    plan = plan_test("assert f() == ({1: (2, 'a')}, [1.5, None], {3}, frozenset({4}), b'hi', float('inf'))")
    enc = '["t",[["d",[[1,["t",[2,"a"]]]]],["l",[1.5,null]],["s",[3]],["fs",[4]],["b","6869"],["inf",1]]]'
    assert judge_records(plan, f"[0,[[{enc}]]]\n")[0] == "ok"
    assert judge_records(plan, f"[0,[[{enc.replace('fs', 's')}]]]\n")[0] == "ok"  # {4} == frozenset({4}) in Python too
    as_list = enc.replace('["t",[2', '["l",[2')  # (2, 'a') reported as [2, 'a']
    assert judge_records(plan, f"[0,[[{as_list}]]]\n")[0] == "wrong_answer"


@pytest.mark.parametrize(
    "source",
    [
        "assert f(1) == " + "-" * 200_000 + "1",  # MemoryError in the parser
        "assert f(1) == 1" + " + 1" * 300_000,  # parses; the rewrite's AST walks and unparse recurse
    ],
)
def test_a_test_nested_too_deeply_fails_without_crashing_the_host(source):
    plan = plan_test(source)
    assert not plan.checks and "nested too deeply" in plan.source  # it exits non-zero in the sandbox
    compile(plan.source, "test.py", "exec")


def test_each_leaf_is_preceded_by_a_restore_and_the_assert_followed_by_one():
    source = plan_test("assert f(1) == math.factorial(g(2))").source
    statements = [ast.unparse(s) for s in ast.parse(source).body]
    restore = "(lambda: 'r1kit.restore').__code__"
    assert [s if s == restore else s.split()[0] for s in statements] == [
        restore, "try:", restore, "try:", restore, "(lambda:",
    ]  # fmt: skip
