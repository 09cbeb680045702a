"""The one exception type for mistakes a user can fix (a bad path, a bad value, a corrupt file)."""

from __future__ import annotations


class UserError(Exception):
    """A problem in the user's input, explained in one sentence that says what to fix.

    Entry points print the sentence and exit with status 2; any other exception is a bug
    and keeps its traceback.
    """


def find_user_error(exc: BaseException) -> UserError | None:
    """Return the UserError behind ``exc`` (Hydra's instantiate wraps errors), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, UserError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def check(condition: bool, message: str) -> None:
    """Raise ``UserError(message)`` unless ``condition`` holds."""
    if not condition:
        raise UserError(message)


def positive(value: object, key: str) -> float:
    """``value`` as a positive float, or a UserError naming ``key``."""
    number = as_number(value, key)
    check(number > 0, f"{key} must be positive, got {number}")
    return number


def as_number(value: object, key: str, kind: type = float) -> float | int:
    """``value`` as a float (or, with ``kind=int``, a whole number), or a UserError naming ``key``."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UserError(f"{key} must be a number, got {value!r}") from None
    if kind is int:
        if not number.is_integer():
            raise UserError(f"{key} must be a whole number, got {value!r}")
        return int(number)
    return number
