"""Reading config.json's fields safely: whole numbers in range, flags, numbers, values shown in errors.

A config.json is user input: a field can hold a string, a list, a float, NaN, a negative or an
absurd number. Each reader here returns a value sizing can compute with, or raises ModelError
naming the field and what to do; ``None`` (and, for counts, a list: per-layer values some
architectures keep) means the field is not given, as before.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from labkit.errors import ModelError
from labkit.sizing.constants import _MAX_COUNT

_FIX = "fix the model's config.json, or point at the model's own one"


def show(value: Any) -> str:
    """``value`` for a one-line message: repr, cut short; never fails."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an int of more than 4300 digits, deep nesting
        text = f"a {type(value).__name__} too large to show"
    return text if len(text) <= 40 else text[:37] + "..."


def is_whole(value: Any) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def whole(
    name: str,
    key: str,
    value: Any,
    *,
    minimum: int = 1,
    lists_missing: bool = True,
) -> int | None:
    """``value`` as a whole number from ``minimum`` to _MAX_COUNT; None when not given."""
    if value is None or (lists_missing and isinstance(value, list)):
        return None
    if not (is_whole(value) and minimum <= value <= _MAX_COUNT):
        raise ModelError(
            f"config.json of {name} has {key} = {show(value)}, "
            f"not a whole number from {minimum} to {_MAX_COUNT:,}",
            _FIX,
        )
    return value


def count_or(name: str, cfg: Mapping[str, Any], key: str, default: int) -> int:
    """``int(cfg.get(key) or default)`` for a count: a positive whole number, else an error."""
    value = cfg.get(key)
    if not value:
        return default
    result = whole(name, key, value, lists_missing=False)
    assert result is not None
    return result


def flag(name: str, cfg: Mapping[str, Any], key: str, default: bool | None = None) -> bool:
    """A true/false field (missing: ``default``; null: false, as before)."""
    value = cfg.get(key, default)
    if value is None or isinstance(value, bool):
        return bool(value)
    raise ModelError(f"config.json of {name} has {key} = {show(value)}, not true or false", _FIX)


def positive_number(name: str, key: str, value: Any) -> float:
    """A finite number above zero (int or float)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if number and 0 < value <= _MAX_COUNT and math.isfinite(value):  # huge ints: no float
        return value
    raise ModelError(
        f"config.json of {name} has {key} = {show(value)}, not a positive number", _FIX
    )


def text(name: str, key: str, value: Any) -> str | None:
    """A string field; None when not given."""
    if value is None or isinstance(value, str):
        return value
    raise ModelError(f"config.json of {name} has {key} = {show(value)}, not a string", _FIX)


def section(name: str, key: str, value: Any) -> dict[str, Any] | None:
    """An object field (quantization_config, attn_config); None when not given or empty."""
    if isinstance(value, dict):
        return value
    if not value:  # null, "", [], false, 0: not given, as before
        return None
    raise ModelError(f"config.json of {name} has {key} = {show(value)}, not an object", _FIX)
