"""Typed last-layer hyper-parameters (:class:`Param`) and their start-up checks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Param:
    """The type of one hyper-parameter. ``kind``: 'int', 'number', 'bool',
    'choice' or 'numbers' (a list of numbers); ``low``/``low_open`` a lower
    bound (``low_open``: strictly above), ``high_open`` a strict upper bound;
    ``choices`` for 'choice'; ``none_ok``: None allowed (None means "the
    dataset's / ERM's value")."""

    kind: str
    low: float | None = None
    low_open: bool = False
    high_open: float | None = None
    choices: tuple = ()
    none_ok: bool = False

    def describe(self) -> str:
        if self.kind == "choice":
            what = f"one of {list(self.choices)}"
        elif self.kind == "bool":
            what = "true or false"
        else:
            noun = {"int": "an integer", "number": "a number", "numbers": "a list of numbers"}[self.kind]
            bound = ""
            if self.low is not None:
                bound = f" {'>' if self.low_open else '>='} {self.low:g}"
            if self.high_open is not None:
                bound += f"{' and' if bound else ''} < {self.high_open:g}"
            if self.kind == "int" and self.low == 0 and self.low_open:
                noun, bound = "a positive integer", ""
            elif self.kind == "number" and self.low == 0 and self.low_open and self.high_open is None:
                noun, bound = "a positive number", ""
            what = noun + (f" (each{bound})" if self.kind == "numbers" and bound else bound)
        return what + (" or null" if self.none_ok else "")


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _got(v: Any, number: bool = False) -> str:
    """', got ...' for an error message; for a numeric string where a number
    is expected, the YAML hint (YAML 1.1 reads 1e-3 as a string)."""
    if not isinstance(v, str):
        return f", got {type(v).__name__} {v!r}"
    try:
        float(v)
    except ValueError:
        return f", got the string {v!r}"
    if not number:
        return f", got the string {v!r}"
    if "." not in v and ("e" in v or "E" in v):
        return (
            f", got the string {v!r} (YAML reads a number like {v} without a decimal point as a "
            f"string; write it with one, e.g. 1.0e-3)"
        )
    return f", got the string {v!r} (write the number without quotes)"


def param_error(p: Param, v: Any) -> str | None:
    """Why ``v`` does not fit ``p`` (None if it does)."""
    if v is None:
        return None if p.none_ok else f"expected {p.describe()}, got null"
    if p.kind == "bool":
        return None if isinstance(v, (bool, np.bool_)) else f"expected true or false{_got(v)}"
    if p.kind == "choice":
        return None if v in p.choices else f"expected {p.describe()}, got {v!r}"
    if p.kind == "numbers" and not isinstance(v, (list, tuple)):
        return f"expected {p.describe()}{_got(v, number=True)}"
    if p.kind == "numbers" and not v:
        return f"expected {p.describe()}, got an empty list"
    noun = {"int": "an integer", "number": "a number", "numbers": "a list of numbers"}[p.kind]
    for x in v if p.kind == "numbers" else [v]:
        if not is_number(x):
            return f"expected {noun}{_got(x, number=True)}"
        if p.kind == "int" and not isinstance(x, (int, np.integer)):
            hint = " (write it without a decimal point)" if float(x).is_integer() else ""
            return f"expected {p.describe()}, got {x!r}{hint}"
        bad = not math.isfinite(float(x))
        bad |= p.low is not None and (float(x) <= p.low if p.low_open else float(x) < p.low)
        bad |= p.high_open is not None and float(x) >= p.high_open
        if bad:
            return f"expected {p.describe()}, got {x!r}"
    return None


POS_INT = Param("int", low=0, low_open=True)
POS_NUM = Param("number", low=0, low_open=True)
NONNEG_NUM = Param("number", low=0)
DTYPE = Param("choice", choices=("float32", "float64"))
