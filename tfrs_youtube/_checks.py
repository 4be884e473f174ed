"""Argument checks shared by every module: one message shape, naming the argument and value.

Each check raises `ValueError("`name` must be .... Received: name=value")`, whether the value
has the wrong type or is out of range, and returns the value normalized (a Python int or
float), so callers can write `self.k = check_int("k", k, 1)`.
"""

from __future__ import annotations

import numbers
from typing import Any

__all__ = ["check_int", "check_number"]


def check_int(
    name: str,
    value: Any,
    minimum: int | None = None,
    maximum: int | None = None,
    allow_none: bool = False,
) -> int | None:
    """`value` as an int in `[minimum, maximum]` (bounds optional; bools are not ints).

    >>> check_int("k", 3, 1)
    3
    >>> check_int("k", 0, 1)
    Traceback (most recent call last):
    ...
    ValueError: `k` must be an int >= 1. Received: k=0
    >>> check_int("k", 2.0, 1, 10)
    Traceback (most recent call last):
    ...
    ValueError: `k` must be an int in [1, 10]. Received: k=2.0
    """
    if value is None and allow_none:
        return None
    if minimum is not None and maximum is not None:
        rule = f"an int in [{minimum}, {maximum}]"
    elif minimum is not None:
        rule = f"an int >= {minimum}"
    elif maximum is not None:
        rule = f"an int <= {maximum}"
    else:
        rule = "an int"
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
    ):
        none = " or None" if allow_none else ""
        raise ValueError(f"`{name}` must be {rule}{none}. Received: {name}={value!r}")
    return int(value)


def check_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """`value` as a float within the bounds; `[` and `(` as in interval notation.

    >>> check_number("dropout", 0.3, 0.0, 1.0, high_inclusive=False)
    0.3
    >>> check_number("temperature", 0, 0.0, low_inclusive=False)
    Traceback (most recent call last):
    ...
    ValueError: `temperature` must be a number > 0. Received: temperature=0
    """
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and value == value
    if ok and low is not None:
        ok = value >= low if low_inclusive else value > low
    if ok and high is not None:
        ok = value <= high if high_inclusive else value < high
    if not ok:
        if high is None and low is not None:
            rule = f"a number {'>=' if low_inclusive else '>'} {low:g}"
        elif low is None and high is not None:
            rule = f"a number {'<=' if high_inclusive else '<'} {high:g}"
        elif low is None:
            rule = "a number"
        else:
            rule = (f"a number in {'[' if low_inclusive else '('}{low:g}, {high:g}"
                    f"{']' if high_inclusive else ')'}")
        raise ValueError(f"`{name}` must be {rule}. Received: {name}={value!r}")
    return float(value)
