"""What every entry script shares: turning a user's mistake into one line and exit status 2."""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable, TypeVar

from siamese.errors import find_user_error

T = TypeVar("T")


def report_user_errors(func: Callable[..., T]) -> Callable[..., T]:
    """Print ``error: <sentence>`` and exit 2 for a UserError (anywhere in the cause chain).

    With ``HYDRA_FULL_ERROR=1`` the error propagates with its full traceback instead.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except Exception as exc:
            user_error = find_user_error(exc)
            if user_error is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {user_error}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
