"""Typed recipes: flat YAML files mapped onto dataclasses, validated at load.

A stage declares its config as a dataclass (shared blocks are declared once in
`r1kit/configs.py` and combined by inheritance). `parse_config(GRPOConfig, argv)` reads
`--config recipe.yaml`, applies command-line overrides (`--learning_rate 1e-5`, `--key=value`,
dotted keys such as `--rewards.0.weight 2` for nested values) and validates everything at once:

- unknown key (with a "did you mean" suggestion), wrong type, missing required key,
  value out of range or not among the allowed choices, missing file/model path.

Every problem raises `UserError` naming the file, the key and what is allowed, so entry points
exit with code 2 and no traceback. Constraints live next to the field they constrain:

    learning_rate: float = arg(1e-6, "Peak learning rate.", gt=0)
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from r1kit.errors import UserError

T = TypeVar("T")
MISSING = dataclasses.MISSING


def arg(default: Any = MISSING, help: str = "", **constraints: Any) -> Any:
    """A config field with help text and constraints.

    constraints: gt/ge/lt/le (numbers), choices (any values), path ("file" | "dir" | "model" | "tokenizer" |
    "file_or_dir"; checked to exist when set), nonempty (str/list must not be empty).
    A mutable default (list/dict) is copied per instance.
    """
    meta = {"help": help, **constraints}
    if default is MISSING:
        return dataclasses.field(metadata=meta)
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# ----------------------------------------------------------------------------------- type checks


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if dataclasses.is_dataclass(tp):
        return f"mapping with keys {', '.join(f.name for f in dataclasses.fields(tp))}"
    return getattr(tp, "__name__", str(tp))


class _Bad(Exception):
    """Internal: a value does not fit a type; converted to UserError with context."""


def _coerce(value: Any, tp: Any, where: str, check_paths: bool = True) -> Any:
    """Return `value` converted to `tp`, or raise _Bad."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where, check_paths)
            except _Bad:
                continue
        raise _Bad
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices and not (isinstance(value, bool) and True in choices and 1 in choices):
            return value
        raise _Bad
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise _Bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d[\d_]*", value.strip()):
            return int(value)
        raise _Bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-5` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise _Bad from None
        raise _Bad
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. `answer: 42` in YAML
        raise _Bad
    if origin in (list, tuple) or tp in (list, tuple):
        (elem,) = typing.get_args(tp) or (Any,)
        if isinstance(value, str) and elem in (str, Any):
            value = [v.strip() for v in value.split(",") if v.strip()]  # --report_to a,b
        if not isinstance(value, (list, tuple)):
            raise _Bad
        return [_coerce(v, elem, f"{where}[{i}]", check_paths) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise _Bad
        kt, vt = typing.get_args(tp) or (Any, Any)
        return {_coerce(k, kt, where, check_paths): _coerce(v, vt, f"{where}.{k}", check_paths) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise _Bad
        return _build(tp, value, source=None, prefix=f"{where}.", check_paths=check_paths)
    if isinstance(value, tp):
        return value
    raise _Bad


def _check_constraints(name: str, value: Any, meta: dict, source: str, check_paths: bool = True) -> None:
    if value is None:
        return
    checks = {
        "gt": (lambda v, b: v > b, "greater than"),
        "ge": (lambda v, b: v >= b, "at least"),
        "lt": (lambda v, b: v < b, "less than"),
        "le": (lambda v, b: v <= b, "at most"),
    }
    for key, (ok, words) in checks.items():
        if key in meta and not ok(value, meta[key]):
            raise UserError(f"{source}: key '{name}' is {value!r} but must be {words} {meta[key]}.")
    if "choices" in meta:
        vals = value if isinstance(value, list) else [value]
        for v in vals:
            if v not in meta["choices"]:
                raise UserError(
                    f"{source}: key '{name}' is {v!r}; allowed: {', '.join(map(repr, meta['choices']))}."
                )
    if meta.get("nonempty") and len(value) == 0:
        raise UserError(f"{source}: key '{name}' must not be empty.")
    kind = meta.get("path")
    if kind and check_paths:
        check_path(name, value, kind, source, check_paths)


def check_path(name: str, value: str, kind: str, source: str, check_paths: bool | str = True) -> None:
    """Raise UserError when `value` of key `name` is not the `kind` of path its field declares."""
    p = Path(os.path.expanduser(value))
    if kind == "file" and not p.is_file():
        what = "is a directory, not a file" if p.is_dir() else "does not exist"
        raise UserError(f"{source}: key '{name}': file '{value}' {what}. Fix the path.")
    if kind == "dir" and not p.is_dir():
        what = "is a file, not a directory" if p.exists() else "does not exist"
        raise UserError(f"{source}: key '{name}': directory '{value}' {what}. Fix the path.")
    if kind == "file_or_dir" and not p.exists():
        raise UserError(f"{source}: key '{name}': path '{value}' does not exist. Fix the path.")
    if kind in ("model", "tokenizer"):
        from r1kit.hub import check_model

        check_model(value, key=name, source=source, hub=check_paths != "local", kind=kind)


# ------------------------------------------------------------------------------------- building


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def _build(cls: type[T], raw: dict, source: str | None, prefix: str = "", check_paths: bool = True) -> T:
    source = source or "recipe"
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            raise UserError(
                f"{source}: unknown key '{prefix}{key}' for {cls.__name__}.{_suggest(str(key), list(fields))}"
                f" Known keys: {', '.join(sorted(fields))}."
            )
    kwargs = {}
    for name, f in fields.items():
        full = f"{prefix}{name}"
        if name not in raw:
            if f.default is MISSING and f.default_factory is MISSING:
                raise UserError(
                    f"{source}: missing required key '{full}' ({_type_name(hints[name])}): "
                    f"{f.metadata.get('help', '')}".rstrip(": ")
                )
            continue
        try:
            value = _coerce(raw[name], hints[name], full, check_paths)
        except _Bad:
            raise UserError(
                f"{source}: key '{full}' has value {raw[name]!r} ({type(raw[name]).__name__}); "
                f"expected {_type_name(hints[name])}."
            ) from None
        _check_constraints(full, value, dict(f.metadata), source, check_paths)
        kwargs[name] = value
    obj = cls(**kwargs)
    post = getattr(obj, "validate", None)
    if callable(post):
        try:
            post()
        except ValueError as e:  # cross-field rules raise ValueError; give them the file name
            raise UserError(f"{source}: {e}") from None
    return obj


def read_yaml(path: str | os.PathLike) -> dict:
    """Read a recipe file into a dict; a missing file or bad YAML is a UserError."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"recipe file '{path}' does not exist.")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe must be a mapping of key: value, got {type(data).__name__}.")
    return data


def set_dotted(raw: dict, dotted: str, value: Any) -> None:
    """`rewards.0.weight=2` sets raw['rewards'][0]['weight']."""
    parts = dotted.split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise UserError(f"override '--{dotted}': '{part}' is not an index of the list '{'.'.join(parts[:i])}'.")
            node = node[int(part)]
        else:
            node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise UserError(f"override '--{dotted}': '{last}' is not an index of that list.")
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise UserError(f"override '--{dotted}': '{'.'.join(parts[:-1])}' is not a mapping or list.")


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """['--lr', '1e-5', '--x=3', '--flag'] -> [('lr', 1e-5), ('x', 3), ('flag', True)].

    Values are read as YAML scalars, so `true`, `3`, `[a, b]` and `null` mean what they do in a recipe.
    """
    out: list[tuple[str, Any]] = []
    i = 0
    while i < len(items):
        tok = items[i]
        if not tok.startswith("--") or tok == "--":
            raise UserError(f"unexpected argument '{tok}'. Overrides look like `--key value` or `--key=value`.")
        key = tok[2:]
        if "=" in key:
            key, text = key.split("=", 1)
            i += 1
        elif i + 1 < len(items) and not items[i + 1].startswith("--"):
            text = items[i + 1]
            i += 2
        else:
            text = "true"  # a bare `--flag` turns a boolean on
            i += 1
        try:
            value = yaml.safe_load(text) if text != "" else ""
        except yaml.YAMLError:
            value = text
        out.append((key.replace("-", "_") if "." not in key else key, value))
    return out


def load_config(
    cls: type[T],
    path: str | os.PathLike | None = None,
    overrides: list[str] | dict | None = None,
    check_paths: bool | Literal["local"] = True,
    source: str | None = None,
) -> T:
    """Build and validate `cls` from a recipe file plus overrides (CLI tokens or a dict).

    check_paths=False skips the existence checks of path fields (used to lint recipes whose
    models are built later, e.g. by `r1kit build-tiny`); check_paths="local" checks local paths but
    does not look hub ids up (a real-scale recipe linted offline). Model names follow `r1kit.hub`.
    source: what error messages name instead of the file (e.g. "r1.yaml: stage 'grpo'")."""
    raw = read_yaml(path) if path else {}
    named = source
    source = named or (str(path) if path else "command line")
    if isinstance(overrides, dict):
        pairs = list(overrides.items())
    else:
        pairs = parse_overrides(list(overrides or []))
    for key, value in pairs:
        set_dotted(raw, key, value)
    if pairs and path and not named:
        source = f"{path} (with command-line overrides)"
    return _build(cls, raw, source, check_paths=check_paths)


def config_help(cls: type) -> str:
    """One line per key: name, type, default, help. Used by `--help`."""
    hints = typing.get_type_hints(cls)
    lines = []
    for f in dataclasses.fields(cls):
        if f.default is not MISSING:
            default = repr(f.default)
        elif f.default_factory is not MISSING:
            default = repr(f.default_factory())
        else:
            default = "required"
        extra = "".join(f" {k}={f.metadata[k]}" for k in ("gt", "ge", "lt", "le") if k in f.metadata)
        lines.append(f"  --{f.name} ({_type_name(hints[f.name])}, {default}{extra})\n      {f.metadata.get('help', '')}")
    return "\n".join(lines)


def parse_config(cls: type[T], argv: list[str] | None = None, prog: str = "r1kit") -> T:
    """Entry-point parsing: `[--config FILE] [--key value ...]`; `--help` prints every key."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        doc = (sys.modules[cls.__module__].__doc__ or "").strip()
        print(f"usage: {prog} --config RECIPE.yaml [--key value ...]\n")
        if cls.__doc__:
            print(cls.__doc__.strip() + "\n")
        print("keys (in the recipe or as --key value overrides):")
        print(config_help(cls))
        if doc:
            print()
        raise SystemExit(0)
    path = None
    rest: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] == "--config":
            if i + 1 >= len(argv):
                raise UserError("--config needs a recipe file path.")
            path = argv[i + 1]
            i += 2
        elif argv[i].startswith("--config="):
            path = argv[i].split("=", 1)[1]
            i += 1
        else:
            rest.append(argv[i])
            i += 1
    return load_config(cls, path, rest)


def to_dict(cfg: Any) -> dict:
    """Plain dict of a config (for logging and saving next to checkpoints)."""
    return dataclasses.asdict(cfg)
