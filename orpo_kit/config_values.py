"""Config values as people type them: convert each to its field's declared type, then check its range.

Values arrive as text (`KEY=VALUE`, flags), as whatever YAML made of them (YAML 1.1 reads `1e-3` as the
*string* '1e-3'; only `1.0e-3` is a float there), or as Python objects. Each is converted by the type the
`ORPOConfig` field declares, so `learning_rate=3e-4` is a float wherever it was typed, and a value that
cannot be used stops with one line naming the key, the value and what is expected.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable
from typing import Any

import yaml

NULLS = ("", "null", "none", "~")
TRUE = ("true", "yes", "on", "y", "1")
FALSE = ("false", "no", "off", "n", "0")


class ConfigError(ValueError):
    """One config value that cannot be used: the message names the key, the value and what is expected."""

    def __init__(self, key: str, value: Any, expected: str) -> None:
        super().__init__(f"{key}={_show(value)}: {expected}")
        self.key, self.value, self.expected = key, value, expected


def _show(value: Any) -> str:
    """The value as the user would recognise it (text quoted when it would otherwise look like a number)."""
    return repr(value) if isinstance(value, str) else str(value)


def _optional(hint: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        base = args[0] if len(args) == 1 else typing.Union[tuple(args)]  # noqa: UP007 (a Union built at run time)
        return base, len(args) < len(typing.get_args(hint))
    return hint, False


def _to_bool(key: str, value: Any) -> bool:
    """true/false, yes/no, on/off, 1/0 in any case."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise ConfigError(key, value, "expected true or false")


def _to_float(key: str, value: Any) -> float:
    """A finite number in any notation: 3e-4, 3.0e-4, 0.0003, .5, 1_000."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(key, value, "expected a number such as 0.1 or 3e-4")
    try:
        number = float(value.strip().replace("_", "") if isinstance(value, str) else value)
    except ValueError:
        raise ConfigError(key, value, "expected a number such as 0.1 or 3e-4") from None
    if not math.isfinite(number):
        raise ConfigError(key, value, "expected a finite number")
    return number


def _to_int(key: str, value: Any) -> int:
    """A whole number: 100, 1_000, 1e3 (but not 2.5)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        number = _to_float(key, value)
    except ConfigError:
        raise ConfigError(key, value, "expected a whole number such as 100") from None
    if not number.is_integer():
        raise ConfigError(key, value, "expected a whole number such as 100")
    return int(number)


def _to_str(key: str, value: Any) -> str:
    """Text; numbers become their text (a split named 2024), booleans are refused (YAML's `no`, `off`)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ConfigError(key, value, "expected text (put quotes around it in YAML)")


def _parse_yaml(key: str, text: str, expected: str) -> Any:
    """A YAML fragment typed on a command line ('[a, b]', '{k: v}')."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(key, text, expected) from None


def _to_str_list(key: str, value: Any) -> list[str]:
    """A list of text: a YAML list, '[a, b]' or 'a,b'."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            value = _parse_yaml(key, text, "expected a list such as [a, b]")
        else:
            return [part.strip() for part in text.split(",") if part.strip()]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(key, value, "expected a list such as [a, b]")
    return [_to_str(key, item) for item in value]


def _to_dict(key: str, value: Any) -> dict[str, Any]:
    """A mapping: YAML, or '{k: v, ...}' typed on a command line."""
    if isinstance(value, str):
        value = _parse_yaml(key, value, "expected a mapping such as {key: value}") if value.strip() else {}
    if not isinstance(value, dict):
        raise ConfigError(key, value, "expected a mapping such as {key: value}")
    return {str(k): v for k, v in value.items()}


def _to_str_or_list(key: str, value: Any) -> str | list[str]:
    """One name, or a list of names."""
    if isinstance(value, (list, tuple)) or (isinstance(value, str) and value.strip().startswith("[")):
        return _to_str_list(key, value)
    return _to_str(key, value)


def _to_str_or_dict(key: str, value: Any) -> str | dict[str, Any]:
    """One name, or a mapping."""
    if isinstance(value, dict) or (isinstance(value, str) and value.strip().startswith("{")):
        return _to_dict(key, value)
    return _to_str(key, value)


CONVERTERS: dict[Any, Callable[[str, Any], Any]] = {
    bool: _to_bool,
    int: _to_int,
    float: _to_float,
    str: _to_str,
    list[str]: _to_str_list,
    dict[str, Any]: _to_dict,
    dict[str, str]: _to_dict,
    str | list[str]: _to_str_or_list,
    str | dict[str, str]: _to_str_or_dict,
}


def convert(key: str, value: Any, hint: Any) -> Any:
    """`value` as the type `hint` declares (None allowed for optional fields), or ConfigError."""
    base, nullable = _optional(hint)
    if nullable and (value is None or (isinstance(value, str) and value.strip().lower() in NULLS)):
        return None
    if value is None:
        raise ConfigError(key, value, "a value is required here")
    if base is Any:
        return value
    converter = CONVERTERS.get(base)
    if converter is None:
        raise TypeError(f"no converter for the type of config field {key!r}: {hint}")
    return converter(key, value)


def _num(x: float) -> str:
    """A bound as people write it: 1, 0.5, 4294967295."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


# Ranges: each check returns the text of what is expected when the value is outside it, else None.
Check = Callable[[Any], "str | None"]


def at_least(low: float) -> Check:
    """value >= low (None passes: optional fields)."""
    return lambda v: None if v is None or v >= low else f"must be at least {_num(low)}"


def above(low: float) -> Check:
    """value > low."""
    return lambda v: None if v is None or v > low else f"must be greater than {_num(low)}"


def between(low: float, high: float, *, high_open: bool = False, low_open: bool = False) -> Check:
    """low <= value <= high (either end open on request)."""

    def check(v: Any) -> str | None:
        ok = v is None or ((v > low if low_open else v >= low) and (v < high if high_open else v <= high))
        return (
            None if ok else f"must be in {'(' if low_open else '['}{_num(low)}, {_num(high)}{')' if high_open else ']'}"
        )

    return check


def one_of(*choices: str) -> Check:
    """value among the choices."""
    return lambda v: None if v in choices else f"expected one of {', '.join(choices)}"


def not_empty(v: Any) -> str | None:
    """Text that is not blank."""
    return None if v is None or str(v).strip() else "must not be empty"
