"""Reading and checking result records against their JSON schemas (see :mod:`mpm.records`).

:func:`load_record` reads a file, :func:`parse_record` bytes and :func:`validate_record` a parsed
dict; each returns the record or raises :class:`RecordError` (a :class:`~mpm.errors.ConfigError`)
with one line naming the file and every missing or invalid field, e.g.::

    results/eval/x.json: not a valid mpm.eval/1 record: missing dataset, images, metrics; invalid: limit (0 is less than the minimum of 1)

(:attr:`RecordError.fields` says the same field by field: ``mpm.eval/1 record has no dataset, images,
metrics; limit (0 is less than the minimum of 1)``.)

Besides the JSON schema, one rule holds for every field of every record: a number is finite. JSON has
no NaN or Infinity, but Python's ``json`` reads and writes the literals ``NaN``, ``Infinity`` and
``-Infinity`` as floats; such a value is invalid (``metrics.mIoU = nan is not a finite number``),
here and nowhere else. A schema marks a field that must be a finite number (not null either) with
the keyword ``"finite": true`` (``metrics.mIoU``); its message is the same.

Validation needs ``jsonschema`` (a core dependency); without it the loader says so.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from mpm.errors import ConfigError
from mpm.records.tags import BENCH_SCHEMA, EVAL_SCHEMA, TRAIN_SCHEMA

__all__ = ["KINDS", "SCHEMAS", "RecordError", "is_finite_number", "load_record", "parse_record", "record_kind",
           "validate_record"]

_HERE = Path(__file__).resolve().parent
#: schema tag -> short kind name (tracking's ``mpm.kind``, result folders, the schema file's name)
KINDS: dict[str, str] = {EVAL_SCHEMA: "eval", BENCH_SCHEMA: "bench", TRAIN_SCHEMA: "train"}
#: schema tag -> JSON schema file (``mpm/records/<kind>.schema.json``)
SCHEMAS: dict[str, Path] = {tag: _HERE / f"{kind}.schema.json" for tag, kind in KINDS.items()}
_MAX_LISTED = 40


class RecordError(ConfigError):
    """A result record that cannot be read or does not follow its schema.

    For a record that does not follow its schema, ``tag`` is its schema, ``missing`` the fields it
    lacks and ``invalid`` the others at fault, each with why (``limit (0 is less than the minimum
    of 1)``, ``metrics.mIoU = 'n/a' is not a finite number``); both are empty otherwise.
    """

    def __init__(self, message: str, *, tag: str | None = None, missing: list[str] | None = None,
                 invalid: list[str] | None = None) -> None:
        super().__init__(message)
        self.tag, self.missing, self.invalid = tag, list(missing or ()), list(invalid or ())

    @property
    def fields(self) -> str:
        """The problems field by field, ``mpm.eval/1 record has no metrics.mIoU; limit (0 is less than ...)``;
        empty for an error that names no field."""
        missing = [f"{self.tag} record has no {_listed(self.missing)}"] if self.missing else []
        return "; ".join(missing + ([_listed(self.invalid)] if self.invalid else []))


def load_record(path: str | os.PathLike) -> dict[str, Any]:
    """The validated record in the JSON file ``path`` (see the module docstring)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise RecordError(f"cannot read result {path}: {err.strerror or err}") from None
    return parse_record(data, path)


def parse_record(data: bytes | str, where: str | os.PathLike) -> dict[str, Any]:
    """The validated record in ``data`` (the bytes of the file ``where``)."""
    try:
        record = json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
    except (UnicodeDecodeError, ValueError) as err:
        raise RecordError(f"result {where} is not valid JSON: {err}") from None
    return validate_record(record, where)


def record_kind(record: Mapping[str, Any], where: str | os.PathLike = "record") -> str:
    """``eval``, ``bench`` or ``train``: the kind of a record by its ``schema`` field."""
    if not isinstance(record, Mapping):
        raise RecordError(f"result {where} holds a JSON {type(record).__name__}, expected an object")
    tag = record.get("schema")
    if tag not in SCHEMAS:
        what = "has no schema field" if tag is None else f"has an unknown schema {tag!r}"
        raise RecordError(f"result {where} {what} (expected one of {', '.join(SCHEMAS)})")
    return KINDS[tag]


def validate_record(record: Any, where: str | os.PathLike = "record") -> dict[str, Any]:
    """``record`` itself when it follows its schema; else :class:`RecordError` naming every problem."""
    record_kind(record, where)
    if record.get("complete") is False:
        raise RecordError(f"result {where} is marked incomplete (\"complete\": false); it is no result")
    problems = _problems(record, record["schema"])
    if problems:
        missing = [p for kind, p in problems if kind == "missing"]
        invalid = [p for kind, p in problems if kind == "invalid"]
        parts = []
        if missing:
            parts.append("missing " + _listed(missing))
        if invalid:
            parts.append("invalid: " + _listed(invalid))
        raise RecordError(f"result {where}: not a valid {record['schema']} record: {'; '.join(parts)}",
                          tag=record["schema"], missing=missing, invalid=invalid)
    return dict(record)


# --------------------------------------------------------------------------- internals


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else "")


@lru_cache(maxsize=None)
def _validator(tag: str):
    try:
        import jsonschema
    except ImportError:
        raise RecordError("validating result records needs the jsonschema package: "
                          "pip install 'mpm[pipeline]' (or pip install jsonschema)") from None
    schema = json.loads(SCHEMAS[tag].read_text(encoding="utf-8"))

    def finite(validator, wanted, instance, schema):
        if wanted and not is_finite_number(instance):
            yield jsonschema.ValidationError(_NOT_FINITE)

    cls = jsonschema.validators.extend(jsonschema.validators.validator_for(schema), {"finite": finite})
    return cls(schema)


#: the message of the ``finite`` keyword; :func:`_problems` writes it ``<field> = <value> is not a finite number``
_NOT_FINITE = "is not a finite number"


def is_finite_number(value: Any) -> bool:
    """An int or float (not a bool) that is neither NaN nor infinite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _non_finite(value: Any, path: tuple = ()) -> Iterator[tuple[tuple, float]]:
    """``(path, value)`` of every float in ``value`` that is NaN or infinite (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        yield path, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _non_finite(v, (*path, k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _non_finite(v, (*path, i))


def _dotted(path) -> str:
    return ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in path).replace(".[", "[") or "(top level)"


def _problems(record: Mapping[str, Any], tag: str) -> list[tuple[str, str]]:
    """``[("missing", "dataset.name"), ("invalid", "limit (0 is less than the minimum of 1)")]``, sorted by field."""
    found: list[tuple[list, str, str]] = []  # (path of the object at fault, kind, text)
    for err in _validator(tag).iter_errors(record):
        path = list(err.absolute_path)
        if err.validator == "required":
            present = err.instance if isinstance(err.instance, Mapping) else {}
            found += [(path, "missing", _dotted([*path, name]))
                      for name in err.validator_value if name not in present]
        elif err.validator == "finite":
            found.append((path, "invalid", f"{_dotted(path)} = {err.instance!r} {_NOT_FINITE}"))
        else:
            message = err.message if len(err.message) <= 120 else err.message[:117] + "..."
            found.append((path, "invalid", f"{_dotted(path)} ({message})"))
    found += [(list(path), "invalid", f"{_dotted(path)} = {value!r} {_NOT_FINITE}") for path, value in _non_finite(record)]
    found.sort(key=lambda f: [str(p) for p in f[0]])
    out = [(kind, text) for _, kind, text in found]
    seen: set[tuple[str, str]] = set()
    return [p for p in out if not (p in seen or seen.add(p))]
