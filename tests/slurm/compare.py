"""Compare the outputs of two runs of the same configuration, apart from what is measured or placed.

A timing (latency, throughput, wall time, temperatures), a SLURM job id and where the run's folders
lie change from run to run; everything else (accuracy, token counts, GFLOPs, configurations,
checkpoints, table rows) must be equal. The volatile keys are listed here, by name, and nothing else
is dropped.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

#: keys (dotted paths from the top of a result JSON) whose value is a measurement of this run
VOLATILE_EVAL = {"created_utc", "started_utc", "finished_utc", "images_per_s", "wall_time_s"}
VOLATILE_MODEL = {"created_utc", "wall_time_s"}
VOLATILE_BENCH = {"timing", "breakdown_ms", "wall_s", "started_utc", "finished_utc", "environment.soc_temp_before_c",
                  "environment.soc_temp_after_c", "environment.throttled", "target.slurm",
                  "target.slurm_job_id", "target.slurm_job_partition"}
#: tracking markers: the run ids and the store differ, and so does a benchmark's job key (it hashes the
#: spec, whose image and model paths name the run's folders; the DAG test checks the keys on the server)
VOLATILE_MARKER = {"run_id", "parent_run_id", "experiment_id", "tracking_uri", "action", "result",
                   "result_sha256", "job_key"}
#: table columns holding timings (their header names a throughput, a latency or a speed-up)
TIMING_COLUMN_WORDS = ("img/s", "ms/img", "speedup", "latency")


def _drop(obj: Any, volatile: set[str], prefix: str = "") -> Any:
    if isinstance(obj, dict):
        return {k: _drop(v, volatile, f"{prefix}{k}.") for k, v in obj.items() if f"{prefix}{k}" not in volatile}
    if isinstance(obj, list):
        return [_drop(v, volatile, prefix) for v in obj]
    return obj


def _relocate(text: str, roots: dict[str, Path]) -> str:
    """``text`` with each root folder, absolute or as written relative to the repository, named ``<name>``."""
    forms = []
    for name, root in roots.items():
        forms.append((str(root), name))
        if root.is_relative_to(REPO):
            forms.append((str(root.relative_to(REPO)), name))
    for form, name in sorted(forms, key=lambda f: -len(f[0])):
        text = text.replace(form, f"<{name}>")
    return text


def normalised_json(path: Path, roots: dict[str, Path]) -> Any:
    """A result JSON without its volatile keys, its folders written as ``<results>`` / ``<data>``."""
    data = json.loads(_relocate(path.read_text(), roots))
    rel = path.relative_to(roots["results"]).parts
    volatile = {"bench": VOLATILE_BENCH, "eval": VOLATILE_EVAL, "tracking": VOLATILE_MARKER,
                "models": VOLATILE_MODEL}.get(rel[0], set())
    return _drop(data, volatile)


def normalised_csv(path: Path, roots: dict[str, Path]) -> list[dict[str, str]]:
    """A table's rows without its timing columns."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [{k: _relocate(v, roots) for k, v in row.items()
             if not any(word in k.lower() for word in TIMING_COLUMN_WORDS)} for row in rows]


def result_files(results: Path) -> list[Path]:
    """Every result, tracking marker and table CSV of a run (relative paths, sorted)."""
    out = []
    for sub, pattern in (("eval", "*.json"), ("eval", "*.csv"), ("bench", "*.json"), ("tracking", "*.json"),
                         ("tables", "*.csv"), ("models", "*.json")):
        out += [p.relative_to(results) for p in (results / sub).rglob(pattern)]
    return sorted(out)


def differences(a_results: Path, a_data: Path, b_results: Path, b_data: Path) -> list[str]:
    """What differs between two runs' results (empty when they agree)."""
    a_roots = {"results": a_results, "data": a_data}
    b_roots = {"results": b_results, "data": b_data}
    a_files, b_files = result_files(a_results), result_files(b_results)
    problems = []
    if a_files != b_files:
        problems.append(f"different files: only in {a_results}: {sorted(set(a_files) - set(b_files))}; "
                        f"only in {b_results}: {sorted(set(b_files) - set(a_files))}")
    for rel in sorted(set(a_files) & set(b_files)):
        if rel.suffix == ".json":
            a, b = normalised_json(a_results / rel, a_roots), normalised_json(b_results / rel, b_roots)
        else:
            a, b = normalised_csv(a_results / rel, a_roots), normalised_csv(b_results / rel, b_roots)
        if a != b:
            problems.append(f"{rel}: {_first_difference(a, b)}")
    return problems


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{path}{key}: only in {'second' if key not in a else 'first'}"
            if a[key] != b[key]:
                return _first_difference(a[key], b[key], f"{path}{key}.")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return _first_difference(x, y, f"{path}[{i}].")
    return f"{path.rstrip('.')}: {str(a)[:200]} != {str(b)[:200]}"
