"""The config's names of a job: dataset, model, method and schedule, as the pipeline's config spells them.

``config/demo.yaml`` names a schedule (``"2-5": [2, 5]``); a record carries that name in ``names``
beside the resolved blocks (``method.schedule``), so tracking and tables show the config's name
instead of rebuilding one from the blocks. The workflow passes the names to ``mpm eval`` /
``mpm bench`` (``--names dataset=synthetic,model=seg-t-demo,method=mpm,schedule=2-5``); run by
hand, what is not given is derived here, once (:func:`resolve_names`):

============  =====================================================================================
``dataset``   the dataset evaluated (``--dataset``); a benchmark: None (it times images, not a split)
``model``     the checkpoint's name (:func:`model_name_of`); None for random weights / no file
``method``    the merge method's name (``mpm``)
``schedule``  :func:`schedule_name` of the schedule: ``2-5`` for (2, 5), ``all``, ``dense`` for ()
============  =====================================================================================

Importing this module imports neither torch nor jsonschema.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mpm.errors import ConfigError

__all__ = ["NAMES_HELP", "NAME_KEYS", "Names", "model_name_of", "names_argument", "parse_names", "resolve_names",
           "schedule_name"]

#: the keys of ``names``, in order
NAME_KEYS = ("dataset", "model", "method", "schedule")
#: a name: what the workflow's wildcards allow (letters, digits, ``_ . + -``)
_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")
#: checkpoint file names that say nothing about the model: the folder names it instead
_GENERIC_STEMS = frozenset({"checkpoint", "model", "weights", "best", "last", "latest", "final"})


@dataclass(frozen=True)
class Names:
    """The config's names of one job (see the module docstring)."""

    dataset: str | None
    model: str | None
    method: str
    schedule: str

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)

    @property
    def method_schedule(self) -> str:
        """``tome/all``, ``mpm/2-5``: the method and schedule in console lines and MLflow run names."""
        return f"{self.method}/{self.schedule}"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Names":
        """The names of a record's ``names`` object (already validated by its schema)."""
        return cls(**{k: data.get(k) for k in NAME_KEYS})


def schedule_name(schedule: Sequence[int] | str | None) -> str:
    """The default name of a schedule: ``(2, 5)`` -> ``2-5``, ``"all"`` -> ``all``, ``()`` -> ``dense``."""
    if isinstance(schedule, str):
        return schedule.strip().lower() or "dense"
    blocks = [int(b) for b in schedule or ()]
    return "-".join(str(b) for b in blocks) if blocks else "dense"


def model_name_of(checkpoint: str | os.PathLike | None) -> str | None:
    """``seg-t-demo`` of ``models/seg-t-demo.pth``; ``seg_tiny_mask`` of ``seg_tiny_mask/checkpoint.pth``."""
    if checkpoint is None or not os.fspath(checkpoint):
        return None
    p = Path(checkpoint)
    return (p.parent.name or p.stem) if p.stem.lower() in _GENERIC_STEMS else p.stem


def parse_names(text: str, option: str = "--names") -> dict[str, str]:
    """``"dataset=synthetic,schedule=2-5"`` -> ``{"dataset": "synthetic", "schedule": "2-5"}``.

    Unknown keys, repeated keys, empty values and characters outside ``[A-Za-z0-9_.+-]`` raise
    :class:`ConfigError` naming the option and the item.
    """
    out: dict[str, str] = {}
    for item in (s.strip() for s in str(text).split(",")):
        if not item:
            continue
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not key:
            raise ConfigError(f"{option} {item!r}: expected KEY=VALUE with KEY one of {', '.join(NAME_KEYS)}")
        if key not in NAME_KEYS:
            raise ConfigError(f"{option} {item!r}: unknown name {key!r}; expected one of {', '.join(NAME_KEYS)}")
        if key in out:
            raise ConfigError(f"{option} {item!r}: {key} is given twice")
        if not _NAME.match(value):
            raise ConfigError(f"{option} {item!r}: a name is letters, digits and _ . + - (got {value!r})")
        out[key] = value
    if not out:
        raise ConfigError(f"{option} {text!r}: no names given (e.g. schedule=2-5)")
    return out


def names_argument(text: str) -> dict[str, str]:
    """argparse ``type=`` of ``--names`` (see :func:`parse_names`): a bad item is a one-line usage error."""
    import argparse

    try:
        return parse_names(text, option="")
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err).lstrip()) from None


#: help of the ``--names`` option of ``mpm eval`` and ``mpm bench``
NAMES_HELP = ("the config's names of the job, recorded beside the resolved values: "
              "dataset=D,model=M,method=X,schedule=S (any of them; default: the dataset given, the "
              "checkpoint's name, the method, the schedule's blocks joined by '-', e.g. 2-5)")


def resolve_names(given: Mapping[str, str | None] | Names | None, *, dataset: str | None, model: str | None,
                  method: str, schedule: Sequence[int] | str | None) -> Names:
    """The names of a job: those ``given`` (the config's), the rest derived from the resolved values."""
    if isinstance(given, Names):
        return given
    given = dict(given or {})
    unknown = sorted(set(given) - set(NAME_KEYS))
    if unknown:
        raise ConfigError(f"names: unknown key(s) {', '.join(unknown)}; expected {', '.join(NAME_KEYS)}")
    return Names(dataset=given.get("dataset") or dataset, model=given.get("model") or model,
                 method=given.get("method") or method, schedule=given.get("schedule") or schedule_name(schedule))
