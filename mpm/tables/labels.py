"""Labels of the paper's tables: a method's columns (from its :class:`~mpm.methods.MethodIdentity`), model and
device texts, slugs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mpm.methods import schedule_text  # noqa: F401  (schedule_text: the tables' re-export)
from mpm.records import BenchRecord, EvalRecord, is_finite_number

SIZE_ORDER = {"T": 0, "S": 1, "B": 2, "L": 3}


def _method_fields(record: EvalRecord | BenchRecord) -> dict:
    """The columns every row (evaluation or timing) derives from a record's method: its identity's forms, the
    config's name of the schedule and the label with it (``ToMe(r=8; all)``)."""
    ident = record.identity
    return {
        "method_name": ident.name,
        "schedule": list(ident.schedule),
        "method_key": ident.key,
        "method": ident.display,
        "schedule_text": ident.schedule_text,
        "schedule_name": record.names.schedule,
        "label": record.label,
        "batch_policy": ident.batch_policy,
    }


def _ckpt_id(path: str) -> str:
    """A checkpoint's name: its folder for Segmenter's ``checkpoint.pth``, else its stem."""
    p = Path(path)
    return p.parent.name if p.stem == "checkpoint" and p.parent.name else p.stem


def _path_key(path: str) -> str:
    return str(Path(path).expanduser().resolve())


def _model_text(size: Any, patch: Any) -> str:
    return f"Seg-{size or '?'}/{patch or 16}"


def _short_device(device: str | None) -> str:
    device = device or "?"
    return device.removeprefix("NVIDIA ")


def _crop(value: Any) -> tuple[int, int] | None:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(is_finite_number(v) for v in value):
        return int(value[0]), int(value[1])
    if is_finite_number(value):
        return int(value), int(value)
    return None


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text).strip("-") or "model"
