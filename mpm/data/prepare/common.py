"""Helpers shared by the preparation modules."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger("mpm.data.prepare")


def rel(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` with POSIX separators (manifest form)."""
    return path.relative_to(root).as_posix()


def default_workers(workers: int | None) -> int:
    """Worker processes for label conversion: ``workers`` or up to 4 CPUs."""
    if workers is not None:
        return max(1, int(workers))
    return max(1, min(4, os.cpu_count() or 1))


def run_jobs(fn: Callable, jobs: Sequence[tuple], workers: int, desc: str, progress: bool | None) -> list:
    """``[fn(*job) for job in jobs]``, in processes when there are many, with a progress bar."""
    show = sys.stderr.isatty() if progress is None else progress
    bar = dict(total=len(jobs), desc=desc, unit="file", disable=not show, file=sys.stderr, leave=False)
    if workers <= 1 or len(jobs) < 32:
        return [fn(*job) for job in tqdm(jobs, **bar)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(fn, *zip(*jobs, strict=True), chunksize=16), **bar))


def warn_size(spec_name: str, split: str, found: int, expected: int | None) -> None:
    if expected is not None and found != expected:
        log.warning("%s/%s has %d samples; the full dataset has %d", spec_name, split, found, expected)


def needs_update(out: Path, sources: Iterable[Path]) -> bool:
    """True when ``out`` is missing or older than any of ``sources``."""
    if not out.is_file():
        return True
    mtime = out.stat().st_mtime_ns
    return any(src.stat().st_mtime_ns > mtime for src in sources if src.exists())
