"""How values become MLflow params and tags: one string form, clear truncation, valid keys.

Stringification (:func:`stringify`) is the same everywhere (params, tags, the job key), so a
value read from a result JSON and the same value given on the command line
(``--param limit=8``) compare equal:

==================  ==========================================  ===================
value               string                                      example
==================  ==========================================  ===================
``None``            ``null``                                    ``null``
bool                ``true`` / ``false``                        ``true``
int                 decimal                                     ``32``
float               shortest round-trip repr (integral: ``.0``) ``0.5``, ``nan``
str                 itself                                      ``mpm``
list/tuple/dict     compact JSON, keys sorted                   ``[2,5]``, ``{"r":8}``
anything else       ``str(value)``                              ``/data/ade20k``
==================  ==========================================  ===================

Values longer than MLflow's limits (params 6000 characters, tags 8000) are cut and end
with ``...[truncated: N chars, sha256 XXXXXXXXXXXX]`` (N the full length, the digest of the
full string), so a truncated value is visibly truncated and still distinguishes values.
"""

from __future__ import annotations

import hashlib
import json
import math
import posixpath
import re
from collections.abc import Iterable, Mapping
from pathlib import PurePath
from typing import Any

#: the metrics shown as columns of the UI's runs view (:func:`mpm.tracking.store.runs_view_state`)
VIEW_METRICS = ("mIoU", "gflops_per_image", "tokens_full", "images_per_s", "per_image_ms", "latency_median_ms",
                "gflops")

__all__ = [
    "KEY_LIMIT",
    "PARAM_VALUE_LIMIT",
    "TAG_VALUE_LIMIT",
    "clean_key",
    "flatten",
    "stringify",
    "truncate",
]

#: MLflow's limits (mlflow.utils.validation: MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH, MAX_ENTITY_KEY_LENGTH)
PARAM_VALUE_LIMIT = 6000
TAG_VALUE_LIMIT = 8000
KEY_LIMIT = 250

_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]")


def stringify(value: Any) -> str:
    """The one string form of a param/tag value (see the module docstring)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)  # nan, inf, -inf
    if isinstance(value, str):
        return value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(_jsonable(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def truncate(text: str, limit: int) -> tuple[str, bool]:
    """``text`` cut to ``limit`` characters with a marker saying so; (value, truncated?)."""
    if len(text) <= limit:
        return text, False
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    marker = f"...[truncated: {len(text)} chars, sha256 {digest}]"
    return text[: max(limit - len(marker), 0)] + marker, True


def clean_key(key: Any) -> str:
    """A valid MLflow param/metric/tag key: allowed characters only, no path tricks, <= 250 chars."""
    text = _BAD_KEY_CHARS.sub("_", str(key).strip())
    if not text:
        text = "_"
    if posixpath.normpath(text) != text:  # "a//b", "./a", "a/": MLflow rejects names that resolve elsewhere
        text = text.replace("/", "_")
        if text in (".", ".."):
            text = text.replace(".", "_")
    if len(text) > KEY_LIMIT:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
        text = text[: KEY_LIMIT - 9] + "~" + digest
    return text


def flatten(data: Mapping[str, Any] | None, prefix: str = "", skip: Iterable[str] = ()) -> dict[str, Any]:
    """Nested dicts to ``{"prefix.a.b": value}``; lists stay values. Keys in ``skip`` (at any depth) are dropped."""
    out: dict[str, Any] = {}
    skip = set(skip)
    if not data:
        return out
    for k, v in data.items():
        if k in skip:
            continue
        name = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            if v:
                out.update(flatten(v, name, skip))
            else:
                out[name] = {}
        else:
            out[name] = v
    return out
