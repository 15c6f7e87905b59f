"""Assert-style tests judged on the host: the sandbox reports plain values, the host decides.

A test such as `assert f(3) == [1, 2]` run inside the program's own process can be passed by a
function that returns an object whose `__eq__` always answers True, or that patches what the
assert calls. So before a test is sent, every `assert E` statement in it is split (here, on the
host) into

- *leaves*: the sub-expressions that need the program (calls into its code, the test's own
  variables), which the sandbox evaluates and reports, and
- a *host tree*: the comparison and everything around it that does not need the program
  (literals, `==`, `<`, `in`, `not`, `and`, arithmetic, `abs`, `round`, `sorted`, `set`,
  `math.isclose`, ...), which only the host evaluates, on the reported values.

In the sandbox the assert becomes "evaluate each leaf into a local, then touch a marker" (with a
`(lambda: "r1kit.restore").__code__` before each leaf and after the last, at which the worker puts
every module back as it was before the program):
`(lambda: "r1kit.record <id> <leaves>").__code__`. Reading a function's `__code__` raises an audit
event, and this one involves no name lookup the program could rebind (the lambda is made from a
constant of the test's code), so the program cannot silence it. The worker's audit hook takes the
event only from the test's own code objects while the test runs, reads the leaves from the test
frame's locals, and serializes each leaf value only if it is made of builtin types (None, bool, int, float,
complex, str, bytes, list, tuple, dict, set, frozenset); a subclass instance (which could override
`__eq__`) is written as its builtin base value, read without calling any of its methods. Literal
expected values therefore never enter the sandbox, and no object of the program's takes part in a
comparison.

The host then requires, besides the usual exit status and pass token, one record per assert that
the test must execute (those directly in the test's top level and directly in the body of a
top-level function that the top level calls once, e.g. HumanEval's `check`), at most one of each,
and every record's host tree to evaluate to a true value. Asserts under `if`/`for`/`while`/`try`
may run any number of times; each run must hold.

    >>> plan = plan_test("assert f(3) == [1, 2]")
    >>> print(plan.source)
    (lambda: 'r1kit.restore').__code__
    try:
        _r1kit_v0 = (f(3),)
    except Exception:
        _r1kit_v0 = ()
        __import__('traceback').print_exc()
    (lambda: 'r1kit.restore').__code__
    (lambda: 'r1kit.record 0 1').__code__
    >>> judge_records(plan, '[0,[[["l",[1,2]]]]]\\n')  # assert 0, its one leaf: the list [1, 2]
    ('ok', '')
    >>> judge_records(plan, '[0,[[["t",[1,2]]]]]\\n')  # the tuple (1, 2)
    ('wrong_answer', 'AssertionError, judged on the host: f(3) == [1, 2] (assert 0, line 1)')
    >>> judge_records(plan, '')
    ('error', 'assert 0 (line 1) ran 0 times, expected once: f(3) == [1, 2]')
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
import sys
from dataclasses import dataclass
from functools import lru_cache

MARKER = "r1kit.record"  # prefix of the marker lambda's constant: "r1kit.record <id> <number of leaves>"
RESTORE = "r1kit.restore"  # the worker puts every module back as it was before the program (worker.py)
_LEAF = "_r1kit_v"
_ROW = "_r1kit_row"  # one element's leaves in a host-side all()/any() over a comprehension
_MAX_REPEAT = 10_000_000  # longest sequence `seq * n` the host builds
_MAX_POW_BITS = 1 << 16  # largest int `a ** b` the host computes


class LeafFailed(Exception):
    """A leaf raised in the sandbox, or its value was not plain builtins: the assert fails."""


# Calls and names the host evaluates itself (the test author meant these builtins, whatever the
# program rebinds). Each takes plain values and cannot run program code.
def _range(*args):
    r = range(*args)
    if len(r) > _MAX_REPEAT:
        raise LeafFailed("range too long to build on the host")
    return r


HOST_CALLS = {
    "abs": abs, "all": all, "any": any, "bool": bool, "dict": dict, "float": float, "frozenset": frozenset,
    "int": int, "isinstance": isinstance, "len": len, "list": list, "max": max, "min": min, "range": _range,
    "round": round, "set": set, "sorted": sorted, "str": str, "sum": sum, "tuple": tuple, "type": type,
    "math.isclose": math.isclose, "math.fabs": math.fabs, "math.floor": math.floor, "math.ceil": math.ceil,
    "math.sqrt": math.sqrt, "math.isnan": math.isnan, "math.isinf": math.isinf, "math.log": math.log,
    "sys.getsizeof": sys.getsizeof,  # MBPP compares with it; the sandbox runs this same interpreter
}  # fmt: skip
# Methods the host calls on a reported value (`f(x).startswith("a")`): the object's own method would
# be the program's to fake. Only those whose result cannot grow far beyond their input.
HOST_METHODS = {
    "startswith", "endswith", "count", "index", "find", "rfind", "lower", "upper", "strip", "lstrip",
    "rstrip", "split", "isdigit", "isalpha", "isalnum", "isupper", "islower", "isspace", "keys", "values",
    "items", "get",
}  # fmt: skip
HOST_NAMES = {
    **{n: f for n, f in HOST_CALLS.items() if "." not in n},
    "complex": complex, "bytes": bytes, "NoneType": type(None),
    "math.pi": math.pi, "math.e": math.e, "math.inf": math.inf, "math.nan": math.nan, "math.tau": math.tau,
}  # fmt: skip
# Conversions that iterate their argument: applied to a leaf they run in the sandbox (a map object or
# generator cannot be reported), and their result is reported element by element like any value.
_CONVERSIONS = {"list", "tuple", "set", "frozenset", "sorted", "dict"}


def _pow(a, b):
    if isinstance(a, int) and isinstance(b, int) and abs(b) * max(a.bit_length(), 1) > _MAX_POW_BITS:
        raise LeafFailed("power too large to compute on the host")
    return operator.pow(a, b)


def _mul(a, b):
    for seq, n in ((a, b), (b, a)):
        if isinstance(seq, (str, bytes, list, tuple)) and isinstance(n, int) and len(seq) * n > _MAX_REPEAT:
            raise LeafFailed("sequence repeat too long to build on the host")
    return operator.mul(a, b)


def _lshift(a, b):
    if isinstance(b, int) and b > _MAX_POW_BITS:
        raise LeafFailed("shift too large to compute on the host")
    return operator.lshift(a, b)


_BINOPS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: _mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: _pow, ast.LShift: _lshift,
    ast.RShift: operator.rshift, ast.BitAnd: operator.and_, ast.BitOr: operator.or_, ast.BitXor: operator.xor,
}  # fmt: skip
_CMPOPS = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
    ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_, ast.IsNot: operator.is_not,
}  # fmt: skip
_UNARY = {ast.Not: operator.not_, ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Invert: operator.invert}


@dataclass(frozen=True)
class Check:
    """One assert statement of a test: its host tree (leaves as `_r1kit_v<k>` names) and source."""

    tree: ast.expr
    n_leaves: int
    line: int
    text: str


@dataclass(frozen=True)
class Plan:
    """A test rewritten for the sandbox (`source`) and what the host checks (`checks`, `required`)."""

    source: str
    checks: tuple[Check, ...]
    required: frozenset[int]  # ids that must be recorded exactly once


def _is_method(node) -> bool:
    """`<value>.method` with a host method whose value is not a module the host mirrors (math, sys)."""
    return (isinstance(node, ast.Attribute) and node.attr in HOST_METHODS
            and not (isinstance(node.value, ast.Name) and node.value.id in ("math", "sys")))  # fmt: skip


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return f"{node.value.id}.{node.attr}"
    return None


class _Splitter:
    """Splits one assert expression into a host tree and the leaves the sandbox evaluates.

    `bound`: names the test or the program binds that the host must not take for its builtins
    (HumanEval/38's test has a variable `str`; MBPP/126's function under test is `sum`).
    """

    def __init__(self, bound: frozenset[str], row: bool = False):
        self.leaves: list[ast.expr] = []
        self.bound = bound
        self.row = row  # leaves of a comprehension's element: referenced as `_r1kit_row[k]`

    def host_name(self, node: ast.expr) -> bool:
        name = _dotted(node)
        return (name in HOST_NAMES or name in HOST_CALLS) and name.split(".")[0] not in self.bound

    def leaf(self, node: ast.expr, truth: bool) -> ast.expr:
        # In a truth context (`assert f(x)`, `not f(x)`) only truthiness counts: the sandbox reports
        # `True if f(x) else False`, so a function may return e.g. a re.Match. That is no loophole:
        # the value commits to one truth value before the host applies any `not`.
        if truth:
            node = ast.IfExp(test=node, body=ast.Constant(True), orelse=ast.Constant(False))
        self.leaves.append(node)
        if self.row:
            return ast.Subscript(ast.Name(_ROW, ast.Load()), ast.Constant(len(self.leaves) - 1), ast.Load())
        return ast.Name(id=f"{_LEAF}{len(self.leaves) - 1}", ctx=ast.Load())

    def each(self, node: ast.Call, truth: bool) -> ast.expr:
        """`all(E for x in xs if c)` (or any, or a list comprehension): the sandbox reports one row of
        E's leaves per element, `[(leaf, ...) for x in xs if c]`, and the host applies E to each row."""
        comp = node.args[0]
        targets = {n.id for g in comp.generators for n in ast.walk(g.target) if isinstance(n, ast.Name)}
        inner = _Splitter(self.bound | targets, row=True)
        elt = inner.split(comp.elt, truth=True)
        rows = self.leaf(ast.ListComp(ast.Tuple(inner.leaves, ast.Load()), comp.generators), truth=False)
        loop = ast.comprehension(ast.Name(_ROW, ast.Store()), rows, [], 0)
        return ast.Call(node.func, [ast.GeneratorExp(elt, [loop])], [])

    def is_each(self, node: ast.expr) -> bool:
        return (isinstance(node, ast.Call) and _dotted(node.func) in ("all", "any") and self.host_name(node.func)
                and len(node.args) == 1 and not node.keywords
                and isinstance(node.args[0], (ast.GeneratorExp, ast.ListComp)))  # fmt: skip

    def host_call(self, node: ast.Call) -> bool:
        plain_args = not any(isinstance(a, ast.Starred) for a in node.args)
        plain_keywords = all(k.arg is not None and not isinstance(k.value, ast.Lambda) for k in node.keywords)
        return _dotted(node.func) in HOST_CALLS and self.host_name(node.func) and plain_args and plain_keywords

    def hosted(self, node: ast.expr) -> bool:
        """Whether the host evaluates `node` itself (else it is a leaf)."""
        if isinstance(node, (ast.Constant, ast.Compare, ast.BoolOp, ast.UnaryOp, ast.BinOp, ast.IfExp, ast.Subscript)):
            return True
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            return not any(isinstance(e, ast.Starred) for e in node.elts)
        if isinstance(node, ast.Dict):
            return None not in node.keys
        if isinstance(node, (ast.Name, ast.Attribute)):
            return self.host_name(node)
        if isinstance(node, ast.Call) and self.host_call(node):
            # list(f(x)) runs in the sandbox: f may return an iterator, which cannot be reported.
            return not (_dotted(node.func) in _CONVERSIONS and node.args and not self.hosted(node.args[0]))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in HOST_METHODS:
            return _dotted(node.func.value) is None or not self.host_name(node.func.value)  # f(x).startswith, not math.x
        return False

    def split(self, node: ast.expr, truth: bool = False) -> ast.expr:
        if self.is_each(node):
            return self.each(node, truth)
        if not self.hosted(node):
            return self.leaf(node, truth)
        if isinstance(node, (ast.Constant, ast.Name, ast.Attribute)):
            return node
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            node.operand = self.split(node.operand, truth=True)
            return node
        if isinstance(node, ast.BoolOp):
            node.values = [self.split(v, truth) for v in node.values]
            return node
        if isinstance(node, ast.Call) and _is_method(node.func):
            node.func.value = self.split(node.func.value)
        if isinstance(node, ast.IfExp):
            node.test = self.split(node.test, truth=True)
            node.body, node.orelse = self.split(node.body, truth), self.split(node.orelse, truth)
            return node
        return self.generic(node)

    def generic(self, node: ast.AST) -> ast.AST:
        for field, value in ast.iter_fields(node):
            if field in ("func", "ctx", "op", "ops"):
                continue
            if isinstance(value, list):
                setattr(node, field, [self.split(v) if isinstance(v, ast.expr) else self.generic(v) for v in value])
            elif isinstance(value, ast.expr):
                setattr(node, field, self.split(value))
            elif isinstance(value, ast.AST):  # keyword, slice parts
                setattr(node, field, self.generic(value))
        return node


class _Rewriter(ast.NodeTransformer):
    """Replaces every assert, in source order, by leaf evaluations and one marker."""

    def __init__(self, bound: frozenset[str], shadowed: frozenset[str]):
        self.checks: list[Check] = []
        self.bound, self.shadowed = bound, shadowed

    def visit_Assert(self, node: ast.Assert) -> list[ast.stmt]:
        check_id = len(self.checks)
        text = ast.unparse(node.test)
        splitter = _Splitter(self.bound)
        tree = splitter.split(ast.parse(text, mode="eval").body, truth=True)  # a copy: the original stays intact
        if not splitter.leaves and self.shadowed:
            # Nothing of the program's in it, yet the program defines a builtin's name: that is the
            # function under test (MBPP/126 `assert sum(10, 15) == 6`). Only then is the program's
            # version called; elsewhere (`abs(f(x) - 0.3) < 1e-6`) the test means the builtin.
            splitter = _Splitter(self.bound | self.shadowed)
            tree = splitter.split(ast.parse(text, mode="eval").body, truth=True)
        self.checks.append(Check(tree, len(splitter.leaves), node.lineno, text))
        stmts: list[ast.stmt] = []
        for k, leaf in enumerate(splitter.leaves):
            name = f"{_LEAF}{k}"
            guarded = ast.parse(
                f"try:\n    {name} = (None,)\nexcept Exception:\n    {name} = ()\n    __import__('traceback').print_exc()"
            ).body[0]
            guarded.body[0].value.elts[0] = leaf
            # Modules and helpers as they were before the program, whatever an earlier call into it patched.
            stmts += [_restore_marker(), guarded]
        if splitter.leaves:
            stmts.append(_restore_marker())  # and again for the test's own code after this assert
        stmts += ast.parse(f"(lambda: '{MARKER} {check_id} {len(splitter.leaves)}').__code__").body
        return [ast.copy_location(s, node) for s in stmts]


def _restore_marker() -> ast.stmt:
    return ast.parse(f"(lambda: '{RESTORE}').__code__").body[0]


def _marker(stmt: ast.stmt) -> str | None:
    """The constant of a `(lambda: "<marker>").__code__` statement, else None."""
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Attribute) and isinstance(stmt.value.value, ast.Lambda):
        body = stmt.value.value.body
        return body.value if isinstance(body, ast.Constant) and isinstance(body.value, str) else None
    return None


def _drop_repeated_restores(tree: ast.AST) -> ast.AST:
    """Drop the restore before an assert that directly follows one with leaves (which ended with a
    restore, and nothing ran since): one restore between consecutive asserts, each costs a scan."""
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            stmts = getattr(node, field, None)
            if not isinstance(stmts, list):
                continue
            kept = []
            for stmt in stmts:
                previous = _marker(kept[-1]) if kept else None
                ended_with_restore = previous is not None and previous.startswith(MARKER + " ") and not previous.endswith(" 0")
                if not (ended_with_restore and _marker(stmt) == RESTORE):
                    kept.append(stmt)
            setattr(node, field, kept)
    return tree


def _bound_names(module: ast.Module) -> frozenset[str]:
    """Every name the test binds anywhere (assignments, loop targets, parameters, imports, defs)."""
    names = set()
    for n in ast.walk(module):
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            names.add(n.id)
        elif isinstance(n, ast.arg):
            names.add(n.arg)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(n.name)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in n.names}
    return frozenset(names - {"math", "sys"})  # `import math` binds the module the host mirrors


def _asserts_in_order(node: ast.AST) -> list[ast.Assert]:
    """Assert statements in the order `_Rewriter` numbers them (its traversal order)."""
    found: list[ast.Assert] = []

    class Collect(ast.NodeVisitor):
        def visit_Assert(self, n):
            found.append(n)

    Collect().visit(node)
    return found


def _required(module: ast.Module) -> frozenset[int]:
    """Asserts the test must execute exactly once: top-level ones, and those directly in the body of
    a top-level function that a top-level statement calls exactly once (HumanEval's `check(f)`)."""
    ids = {id(n): k for k, n in enumerate(_asserts_in_order(module))}
    calls: dict[str, int] = {}
    for s in module.body:
        if isinstance(s, ast.Expr) and isinstance(s.value, ast.Call) and isinstance(s.value.func, ast.Name):
            calls[s.value.func.id] = calls.get(s.value.func.id, 0) + 1
    bodies = [module.body] + [s.body for s in module.body if isinstance(s, ast.FunctionDef) and calls.get(s.name) == 1]
    return frozenset(ids[id(s)] for body in bodies for s in body if isinstance(s, ast.Assert))


_DEFINED = re.compile(r"^(?:def|class)\s+(\w+)|^(\w+)\s*=", re.MULTILINE)


def shadowed_builtins(program: str) -> frozenset[str]:
    """Names of host builtins the program defines at its top level (conversions excluded: a test's
    `set([1, 2])` must never be handed to the program).

    >>> sorted(shadowed_builtins("def sum(a, b):\\n    return a\\nset = 3\\nx = 1"))
    ['sum']
    """
    names = {a or b for a, b in _DEFINED.findall(program)}
    return frozenset(n for n in names if n in HOST_CALLS and n not in _CONVERSIONS and n != "range")


# A test the host cannot split (nested past the parser's or the recursion limit) fails, never runs unjudged.
_UNJUDGEABLE = Plan("raise SystemExit('r1kit sandbox: the test is nested too deeply to judge on the host')", (), frozenset())


@lru_cache(maxsize=4096)
def plan_test(source: str, shadowed: frozenset[str] = frozenset()) -> Plan:
    """The sandbox version of one test and the checks the host makes (cached: tests repeat per group).

    `shadowed`: `shadowed_builtins(program)`. A test that does not parse is sent unchanged: the
    sandbox reports its SyntaxError.
    """
    try:
        module = ast.parse(source)
    except (SyntaxError, ValueError):
        return Plan(source, (), frozenset())
    except (MemoryError, RecursionError):  # nested too deeply for the parser: a test nobody can judge
        return _UNJUDGEABLE
    try:
        required = _required(module)
        rewriter = _Rewriter(_bound_names(module), shadowed)
        rewritten = ast.fix_missing_locations(_drop_repeated_restores(rewriter.visit(module)))
        return Plan(ast.unparse(rewritten), tuple(rewriter.checks), required)
    except (MemoryError, RecursionError):  # the AST walks and unparse recurse per nesting level
        return _UNJUDGEABLE


def decode(x):
    """A value from the worker's record encoding (see worker.plain_json); LeafFailed if malformed.

    >>> decode(["d", [[["t", [1, "a"]], ["s", [2.5]]]]])
    {(1, 'a'): {2.5}}
    >>> decode(["inf", -1]), decode(["b", "6869"]), decode(None)
    (-inf, b'hi', None)
    """
    if x is None or type(x) in (bool, int, float, str):
        return x
    if type(x) is not list or not x or x[0] not in _DECODERS:
        raise LeafFailed(f"malformed value {str(x)[:80]}")
    return _DECODERS[x[0]](*x[1:])


_DECODERS = {
    "l": lambda items: [decode(v) for v in items],
    "t": lambda items: tuple(decode(v) for v in items),
    "s": lambda items: {decode(v) for v in items},
    "fs": lambda items: frozenset(decode(v) for v in items),
    "d": lambda pairs: {decode(k): decode(v) for k, v in pairs},
    "b": bytes.fromhex,
    "c": lambda re, im: complex(decode(re), decode(im)),
    "nan": lambda: math.nan,
    "inf": lambda sign: math.inf if sign > 0 else -math.inf,
}


def _leaf_value(entry):
    """One reported leaf: [] when it raised, [value] when plain, {"bad": why} when it was not plain."""
    if type(entry) is list and len(entry) == 1:
        return decode(entry[0])
    if type(entry) is dict:
        raise LeafFailed(f"not a plain builtin value: {str(entry.get('bad'))[:80]}")
    if entry == []:
        raise LeafFailed("raised an exception")
    raise LeafFailed(f"malformed leaf {str(entry)[:80]}")


def evaluate(node: ast.AST, env: dict):
    """Evaluate a host tree over plain values; `env` maps leaf names to their reported entries."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id == _ROW:
            return env[_ROW]  # already decoded: a tuple of plain values
        return _leaf_value(env[node.id]) if node.id.startswith(_LEAF) else HOST_NAMES[node.id]
    if isinstance(node, ast.GeneratorExp):  # only as built by `_Splitter.each`: one loop over a leaf
        rows = evaluate(node.generators[0].iter, env)
        if type(rows) is not list or not all(type(r) is tuple for r in rows):
            raise LeafFailed("malformed comprehension rows")
        return (evaluate(node.elt, {**env, _ROW: row}) for row in rows)
    if isinstance(node, ast.Attribute):
        return HOST_NAMES[_dotted(node)]
    if isinstance(node, ast.BoolOp):
        result = None
        for value in node.values:
            result = evaluate(value, env)
            if bool(result) != isinstance(node.op, ast.And):
                return result
        return result
    if isinstance(node, ast.Compare):
        left = evaluate(node.left, env)
        for op, comparator in zip(node.ops, node.comparators):
            right = evaluate(comparator, env)
            if not _CMPOPS[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](evaluate(node.operand, env))
    if isinstance(node, ast.BinOp):
        return _BINOPS[type(node.op)](evaluate(node.left, env), evaluate(node.right, env))
    if isinstance(node, ast.IfExp):
        return evaluate(node.body if evaluate(node.test, env) else node.orelse, env)
    if isinstance(node, ast.Subscript):
        return evaluate(node.value, env)[evaluate(node.slice, env)]
    if isinstance(node, ast.Slice):
        return slice(*(evaluate(p, env) if p is not None else None for p in (node.lower, node.upper, node.step)))
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [evaluate(e, env) for e in node.elts]
        return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)](items)
    if isinstance(node, ast.Dict):
        return {evaluate(k, env): evaluate(v, env) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Call):
        args = [evaluate(a, env) for a in node.args]
        kwargs = {k.arg: evaluate(k.value, env) for k in node.keywords}
        if _is_method(node.func):
            obj = evaluate(node.func.value, env)  # a decoded plain value: its methods are the builtins'
            return getattr(obj, node.func.attr)(*args, **kwargs)
        return HOST_CALLS[_dotted(node.func)](*args, **kwargs)
    raise LeafFailed(f"cannot evaluate {type(node).__name__} on the host")


def _holds(check: Check, leaves: list) -> bool:
    if len(leaves) != check.n_leaves:
        return False
    try:
        return bool(evaluate(check.tree, {f"{_LEAF}{k}": v for k, v in enumerate(leaves)}))
    except Exception:  # noqa: BLE001 - untrusted values: any error while evaluating fails the assert, as in Python
        return False


def judge_records(plan: Plan, text: str) -> tuple[str, str]:
    """(status, why) for the records one test run reported (one JSON line per executed assert).

    status: "ok"; "wrong_answer" when an assert does not hold or a record is malformed; "error"
    when a required assert did not run exactly once (the test stopped early, or ran twice).
    """
    if not plan.checks:
        return "ok", ""  # nothing host-judged: the exit status and pass token decide
    counts = [0] * len(plan.checks)
    lines = text.split("\n")
    if lines[-1] != "":
        return "error", "the assert records were cut off"
    for line in lines[:-1]:
        try:
            check_id, leaves = json.loads(line)
        except (ValueError, TypeError, RecursionError):
            return "wrong_answer", f"malformed assert record {line[:80]!r}"
        if type(check_id) is not int or not 0 <= check_id < len(plan.checks) or type(leaves) is not list:
            return "wrong_answer", f"malformed assert record {line[:80]!r}"
        check = plan.checks[check_id]
        counts[check_id] += 1
        if not _holds(check, leaves):
            return "wrong_answer", f"AssertionError, judged on the host: {check.text[:200]} (assert {check_id}, line {check.line})"
    for check_id in sorted(plan.required):
        if counts[check_id] != 1:
            check = plan.checks[check_id]
            why = f"assert {check_id} (line {check.line}) ran {counts[check_id]} times, expected once: {check.text[:200]}"
            return "error", why
    return "ok", ""
