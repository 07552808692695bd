"""Dataset preparation: convert labels where needed and write the split manifests.

``prepare_dataset(name, root)`` dispatches on the dataset's layout; each layout has its
own module (:mod:`.ade20k`, :mod:`.cityscapes`, :mod:`.pascal_context`).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from pathlib import Path

from mpm.data.datasets import canonical_split, get_spec

_LAYOUT_MODULES = {
    "ade20k": "mpm.data.prepare.ade20k",
    "cityscapes": "mpm.data.prepare.cityscapes",
    "pascal_context": "mpm.data.prepare.pascal_context",
}


def prepare_dataset(
    name: str,
    root: str | os.PathLike,
    *,
    splits: Iterable[str] | None = None,
    workers: int | None = None,
    progress: bool | None = None,
) -> list[Path]:
    """Prepare ``name`` under ``root`` (``train`` and ``val`` by default); return manifest paths."""
    spec = get_spec(name)
    spec = get_spec(spec.manifest_name)  # a label space sharing another's files prepares those
    chosen = [canonical_split(s, spec) for s in (splits or spec.splits)]
    module = importlib.import_module(_LAYOUT_MODULES[spec.layout])
    return module.prepare(Path(root), spec, chosen, workers=workers, progress=progress)
