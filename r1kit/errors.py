"""User-facing errors.

Anything the user can fix (a recipe key, a path, a data row, a CLI flag) raises `UserError`.
The CLI and every `python -m` entry point catch it, print one message and exit with code 2,
so a user never sees a Python traceback for their own mistake.
"""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

EXIT_USER_ERROR = 2

F = TypeVar("F", bound=Callable)


class UserError(Exception):
    """An error the user can fix. The message says what is wrong and how to fix it."""


def exit_on_user_error(fn: F) -> F:
    """Wrap an entry point: `UserError` -> message on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(EXIT_USER_ERROR) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper  # type: ignore[return-value]
