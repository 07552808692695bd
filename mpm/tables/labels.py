"""Labels of the paper's tables: method keys and display names, schedules, model and device texts, slugs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mpm.tables.results import _is_number

#: row order of method families, and their display names
METHOD_ORDER = {"none": 0, "mpm": 1, "tome": 2, "algm": 3}
METHOD_NAMES = {"none": "none", "mpm": "MPM", "tome": "ToMe", "algm": "ALGM"}
SIZE_ORDER = {"T": 0, "S": 1, "B": 2, "L": 3}


def method_key(method: dict) -> str:
    """What identifies a configuration of a method: name, schedule, batch policy and parameters."""
    m = {k: v for k, v in method.items() if not k.startswith("_")}
    m["schedule"] = [int(b) for b in m.get("schedule") or []]
    m.setdefault("batch_policy", "exact")
    return json.dumps(m, sort_keys=True, default=str)


def schedule_text(schedule: Sequence[int]) -> str:
    """``2,5``; runs of three or more consecutive blocks are written ``0-11``."""
    blocks = sorted(int(b) for b in schedule)
    parts, i = [], 0
    while i < len(blocks):
        j = i
        while j + 1 < len(blocks) and blocks[j + 1] == blocks[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{blocks[i]}-{blocks[j]}")
            i = j + 1
        else:
            parts.append(str(blocks[i]))
            i += 1
    return ",".join(parts)


def _r_text(r: Any) -> str:
    if isinstance(r, (list, tuple)):
        return "[" + ",".join(map(str, r)) + "]" if len(set(r)) > 1 else str(r[0]) if r else "[]"
    return str(r)


def method_display(method: dict) -> str:
    """``MPM``, ``ToMe (r=8)``, ``none``; a batch policy other than ``exact`` is appended."""
    name = method["method"]
    text = METHOD_NAMES.get(name, name)
    if name == "tome" and method.get("r") is not None:
        text += f" (r={_r_text(method['r'])})"
    policy = method.get("batch_policy", "exact")
    return text + (f" [{policy}]" if policy != "exact" else "")


def method_label(method: dict) -> str:
    """A short label for figures: ``MPM(2,5)``, ``ToMe(r=8; 0-11)``, ``none``."""
    name = method["method"]
    if name == "none":
        return "none"
    sched = schedule_text(method.get("schedule") or [])
    inner = f"r={_r_text(method['r'])}; {sched}" if name == "tome" and method.get("r") is not None else sched
    policy = method.get("batch_policy", "exact")
    return f"{METHOD_NAMES.get(name, name)}({inner})" + (f" {policy}" if policy != "exact" else "")


def _method_fields(method: dict) -> dict:
    """The columns every row (evaluation or timing) derives from a record's ``method``."""
    return {
        "method_name": method["method"],
        "schedule": [int(b) for b in method.get("schedule") or []],
        "method_key": method_key(method),
        "method": method_display(method),
        "schedule_text": schedule_text(method.get("schedule") or []),
        "label": method_label(method),
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
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_number(v) for v in value):
        return int(value[0]), int(value[1])
    if _is_number(value):
        return int(value), int(value)
    return None


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text).strip("-") or "model"
