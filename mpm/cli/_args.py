"""Argument parsers shared by the ``mpm`` commands."""

from __future__ import annotations

import ast
from typing import Any

from mpm.errors import ConfigError

#: schedule of a method when none is given on the command line
DEFAULT_SCHEDULES: dict[str, tuple[int, ...]] = {"mpm": (2, 5)}


def parse_schedule(text: str | None) -> tuple[int, ...] | str | None:
    """``"2,5"`` -> (2, 5); ``""``/``"none"`` -> (); ``"all"`` -> ``"all"`` (every block); None stays None."""
    if text is None:
        return None
    text = text.strip()
    if text.lower() in ("", "none", "-", "[]", "()"):
        return ()
    if text.lower() == "all":
        return "all"
    try:
        return tuple(int(v) for v in text.strip("[]()").replace(" ", "").split(",") if v != "")
    except ValueError:
        raise ConfigError(f"--schedule {text!r}: expected comma-separated block indices (e.g. 2,5) or 'all'") from None


def parse_method_args(items: list[str] | None) -> dict[str, Any]:
    """``["r=8", "prop_attn=true", "window=2,2"]`` -> ``{"r": 8, "prop_attn": True, "window": (2, 2)}``."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--method-arg {item!r}: expected KEY=VALUE")
        key, value = (s.strip() for s in item.split("=", 1))
        if not key.isidentifier():
            raise ConfigError(f"--method-arg {item!r}: {key!r} is not a parameter name")
        low = value.lower()
        if low in ("true", "false"):
            out[key] = low == "true"
        elif low in ("none", "null"):
            out[key] = None
        else:
            try:
                out[key] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                out[key] = value
    return out


def parse_int_pair(text: str, flag: str, example: str, single: bool = False) -> tuple[int, int]:
    """``"2048,512"`` / ``"2048x512"`` -> (2048, 512); with ``single``, ``"512"`` -> (512, 512).

    Errors name ``flag`` and show ``example``.
    """
    try:
        vals = tuple(int(v) for v in text.lower().replace("x", ",").split(","))
    except ValueError:
        vals = ()
    if single and len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or min(vals) < 1:
        raise ConfigError(f"{flag} {text!r}: expected {example}")
    return vals  # type: ignore[return-value]
