"""The paper's tables and figures from the pipeline's result records.

Inputs are evaluation records (schema ``mpm.eval/1``: mIoU, GFLOPs per image, tokens left after
each merge step) and benchmark records (``mpm.bench/1``: images/s and per-image latency of one
point — model, method, schedule, batch size, backend, dtype — on one *target*). Outputs, each
file written atomically:

``main_{dataset}_{model}``
    per dataset and model: every method and schedule with mIoU, ΔmIoU against dense, GFLOPs
    per image, images/s of backends ``math`` and ``fa2`` on the GPU target at the table's batch size
    (columns "FA2 off" / "FA2 on" on a CUDA device, else named by device and backend as run, e.g.
    "CPU math"), and the speedups over dense;
``cross_platform``
    per model and method: the GPU target's images/s and the CPU target's per-image latency at
    batch 1 and 2 (ms/image), with speedups;
``ablation_schedules``
    MPM's insertion schedules: tokens left after each insertion, GFLOPs, mIoU, ΔmIoU, speedups;

each as Markdown, LaTeX (booktabs, rendered here: no jinja2 needed), CSV and a standalone HTML page
(what ``snakemake --report`` shows), plus the figures of
:mod:`mpm.tables.figures` (speed–accuracy Pareto front and tokens entering each encoder block
per dataset and model, PNG and PDF) and an index (``index.json``) of what was written.

What a table never does silently:

- mix partial evaluations (an image limit) with full ones: every row has an ``extent`` ("full"
  or "partial (N/M images)") and ΔmIoU is only taken against the dense run of the *same* extent
  (a full run against the full dense run, a partial one against a dense run with the same
  limit); a row without such a dense run has no Δ, and a note says why;
- mix hardware in a column: every timing column names its target and device in its header and
  its settings (dtype, backend, batch, threads on CPUs) in a note; results of one column coming
  from different devices, dtypes or thread counts raise :class:`~mpm.errors.ConfigError`
  (``allow_mixed=True``: the column is marked MIXED and a per-row device column is added);
- hide synthetic data or random weights: the caption says so (``dataset.synthetic`` of an
  evaluation, ``model.weights == "random-init"`` of a timing).

Evaluations and timings are joined on the model (the checkpoint's path, else its name when that
is unambiguous, else — for GPU hosts that cannot download checkpoints — random-initialised
weights of the same size and crop, which the caption then states) and the method (name,
schedule, batch policy and parameters).
"""

from __future__ import annotations

import hashlib
import html
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mpm.errors import ConfigError
from mpm.io import write_json_atomic, write_text_atomic
from mpm.tables.bench import CUDA_BACKEND_LABELS, backend_label, bench_target

EVAL_SCHEMA = "mpm.eval/1"
BENCH_SCHEMA = "mpm.bench/1"
INDEX_SCHEMA = "mpm.tables/1"

#: backends of the throughput columns of the GPU target ("FA2 off" and "FA2 on" on a CUDA device)
GPU_BACKENDS = tuple(CUDA_BACKEND_LABELS)
#: row order of method families, and their display names
METHOD_ORDER = {"none": 0, "mpm": 1, "tome": 2, "algm": 3}
METHOD_NAMES = {"none": "none", "mpm": "MPM", "tome": "ToMe", "algm": "ALGM"}
SIZE_ORDER = {"T": 0, "S": 1, "B": 2, "L": 3}

_REQUIRED = {
    EVAL_SCHEMA: [("dataset", "name"), ("model",), ("method", "method"), ("metrics", "mIoU")],
    BENCH_SCHEMA: [("spec", "batch_size"), ("spec", "backend"), ("spec", "dtype"), ("method", "method"),
                   ("model",), ("environment",), ("timing", "images_per_s"), ("timing", "per_image_ms")],
}
_NUMBERS = {EVAL_SCHEMA: [("metrics", "mIoU")], BENCH_SCHEMA: [("timing", "images_per_s"), ("timing", "per_image_ms"),
                                                                ("spec", "batch_size")]}


# --------------------------------------------------------------------------------------------- inputs

@dataclass
class Results:
    """The records read from result files (each record gets ``_file``: where it came from)."""

    evals: list[dict] = field(default_factory=list)
    benches: list[dict] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    #: JSON files found in folders that hold neither schema (an explicitly named one raises)
    skipped: list[str] = field(default_factory=list)
    #: records read twice with identical content (a file named twice, an MLflow artifact copy)
    duplicates: int = 0


def read_manifest(path: str | Path) -> list[str]:
    """Result paths listed in ``path``: one per line (``#`` comments and blank lines ignored), or
    a JSON list. A relative path is taken from the working directory, else from the manifest's folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"manifest {path}: cannot read it ({getattr(err, 'strerror', None) or err})") from None
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except ValueError as err:
            raise ConfigError(f"manifest {path}: invalid JSON list ({err})") from None
        if not all(isinstance(i, str) for i in items):
            raise ConfigError(f"manifest {path}: a JSON manifest must be a list of paths")
    else:
        items = [line.strip() for line in text.splitlines()]
        items = [i for i in items if i and not i.startswith("#")]
    out = []
    for item in items:
        p = Path(item).expanduser()
        if not p.is_absolute() and not p.exists() and (path.parent / p).exists():
            p = path.parent / p
        out.append(str(p))
    return out


def expand_paths(paths: Iterable[str | Path], manifest: str | Path | None = None) -> list[tuple[Path, bool]]:
    """``(file, named explicitly)`` for files and folders (searched recursively for ``*.json``), once each."""
    items = [Path(p) for p in paths] + [Path(p) for p in (read_manifest(manifest) if manifest else [])]
    out: list[tuple[Path, bool]] = []
    seen: set[str] = set()
    for item in items:
        if item.is_dir():
            entries = [(q, False) for q in sorted(item.rglob("*.json")) if q.is_file()]
        elif item.is_file():
            entries = [(item, True)]
        else:
            raise ConfigError(f"result file {item} does not exist")
        for q, explicit in entries:
            key = str(q.resolve())
            if key not in seen:
                seen.add(key)
                out.append((q, explicit))
    return out


def _get(d: Any, *keys: str, default: Any = None) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_record(rec: dict, schema: str, where: str) -> None:
    for keys in _REQUIRED[schema]:
        if _get(rec, *keys) is None:
            raise ConfigError(f"result file {where}: {schema} record has no {'.'.join(keys)}")
    for keys in _NUMBERS[schema]:
        if not _is_number(_get(rec, *keys)):
            raise ConfigError(f"result file {where}: {'.'.join(keys)} = {_get(rec, *keys)!r} is not a finite number")


def load_results(paths: Iterable[str | Path], manifest: str | Path | None = None) -> Results:
    """Read every result file (a record or a list of records per file).

    Raises :class:`ConfigError` naming the file for a missing or unreadable file, invalid JSON, a
    record without the keys the tables need, and an explicitly named file of another schema.
    """
    res = Results()
    seen: set[str] = set()
    for path, explicit in expand_paths(paths, manifest):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"result file {path}: cannot read it ({getattr(err, 'strerror', None) or err})") from None
        except ValueError as err:
            raise ConfigError(f"result file {path}: invalid JSON ({err})") from None
        records = data if isinstance(data, list) else [data]
        schemas = [r.get("schema") if isinstance(r, dict) else None for r in records]
        if not records or any(s not in (EVAL_SCHEMA, BENCH_SCHEMA) for s in schemas):
            if not explicit:
                res.skipped.append(str(path))
                continue
            bad = next((s for s in schemas if s not in (EVAL_SCHEMA, BENCH_SCHEMA)), None)
            raise ConfigError(f"result file {path}: schema {bad!r} is neither {EVAL_SCHEMA} nor {BENCH_SCHEMA}"
                              if records else f"result file {path}: an empty list holds no result")
        res.files.append(str(path))
        for i, (rec, schema) in enumerate(zip(records, schemas)):
            where = f"{path}" + (f" [record {i}]" if isinstance(data, list) else "")
            _check_record(rec, schema, where)
            digest = hashlib.sha256(json.dumps(rec, sort_keys=True, default=str).encode()).hexdigest()
            if digest in seen:
                res.duplicates += 1
                continue
            seen.add(digest)
            (res.evals if schema == EVAL_SCHEMA else res.benches).append({**rec, "_file": where})
    return res


# --------------------------------------------------------------------------------------------- labels

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


# --------------------------------------------------------------------------------------------- frames

EVAL_COLUMNS = [
    "file", "dataset", "split", "synthetic", "model", "size", "model_name", "model_key", "model_id", "crop", "depth",
    "method_name", "schedule", "method_key", "method", "schedule_text", "label", "batch_policy",
    "mIoU", "aAcc", "mAcc", "gflops", "dense_gflops", "tokens_after", "token_steps", "image_tokens",
    "partial", "evaluated", "total", "limit", "extent", "extent_key", "eval_device", "eval_dtype", "eval_backend",
    "eval_setup",
]


def eval_frame(records: Iterable[dict]) -> pd.DataFrame:
    """One row per evaluation record (lists stay Python lists in object columns)."""
    rows = []
    for r in records:
        ds, images, model, method = r["dataset"], r.get("images") or {}, r.get("model") or {}, r["method"]
        config = model.get("config") or {}
        ckpt = _get(r, "checkpoint", "path")
        evaluated, total = images.get("evaluated"), images.get("total")
        limit = images.get("limit", r.get("limit"))
        partial = bool(r.get("partial") or images.get("partial") or r.get("complete") is False
                       or (_is_number(evaluated) and _is_number(total) and evaluated < total))
        tokens = r.get("tokens") or {}
        steps = [(int(s["block"]), str(s.get("site", "before_block")), float(s["mean"]))
                 for s in tokens.get("steps") or [] if isinstance(s, dict) and _is_number(s.get("mean"))
                 and _is_number(s.get("block"))]
        env = r.get("environment") or {}
        device, dtype, backend = env.get("device_name") or r.get("device"), r.get("dtype"), r.get("backend")
        size = model.get("size")
        crop = _crop(_get(r, "protocol", "crop")) or _crop(config.get("image_size"))
        rows.append({
            "file": r.get("_file"),
            "dataset": ds["name"],
            "split": ds.get("split") or "",
            "synthetic": bool(ds.get("synthetic")),
            "model": _model_text(size, config.get("patch_size")),
            "size": size,
            "model_name": model.get("name"),
            "model_key": _path_key(ckpt) if ckpt else f"{model.get('name')}:{size}:{crop}",
            "model_id": _ckpt_id(ckpt) if ckpt else f"seg_{size}".lower(),
            "crop": crop,
            "depth": config.get("depth"),
            **_method_fields(method),
            "batch_policy": method.get("batch_policy", "exact"),
            "mIoU": float(r["metrics"]["mIoU"]),
            "aAcc": _get(r, "metrics", "aAcc"),
            "mAcc": _get(r, "metrics", "mAcc"),
            "gflops": _get(r, "gflops", "per_image"),
            "dense_gflops": _get(r, "gflops", "dense_per_image"),
            "tokens_after": [float(t) for t in tokens.get("after_step_mean") or []],
            "token_steps": steps,
            "image_tokens": _get(tokens, "image_tokens", "mean"),
            "partial": partial,
            "evaluated": evaluated,
            "total": total,
            "limit": limit,
            "extent": f"partial ({evaluated}/{total} images)" if partial else "full",
            "extent_key": f"partial:{limit if limit is not None else evaluated}:{evaluated}" if partial else "full",
            "eval_device": device,
            "eval_dtype": dtype,
            "eval_backend": backend,
            "eval_setup": ", ".join(str(v) for v in (device, dtype, backend) if v),
        })
    return pd.DataFrame(rows, columns=EVAL_COLUMNS)


TIMING_COLUMNS = [
    "file", "target", "target_source", "device", "device_kind", "weights", "model", "size", "crop", "model_key",
    "model_id", "method_name", "schedule", "method_key", "method", "schedule_text", "label", "batch_policy",
    "batch_size", "backend", "dtype", "threads", "images_per_s", "per_image_ms", "gflops", "tokens_after",
]


def timing_frame(records: Iterable[dict]) -> pd.DataFrame:
    """One row per benchmark record, keyed like :func:`eval_frame`, with its target."""
    rows = []
    for r in records:
        spec, env, model, method = r["spec"], r["environment"], r["model"], r["method"]
        config = model.get("config") or {}
        target, source = bench_target(r)
        weights = model.get("weights") or ("checkpoint" if model.get("checkpoint") else "random-init")
        size = model.get("size") or spec.get("model")
        crop = _crop(spec.get("crop")) or _crop(config.get("image_size"))
        ckpt = model.get("checkpoint") or (spec.get("model") if weights == "checkpoint" else None)
        kind = str(env.get("device") or spec.get("device") or "")
        rows.append({
            "file": r.get("_file"),
            "target": target,
            "target_source": source,
            "device": env.get("device_name") or env.get("cpu_model") or kind or None,
            "device_kind": kind.split(":")[0],
            "weights": weights,
            "model": _model_text(size, config.get("patch_size")),
            "size": size,
            "crop": crop,
            "model_key": _path_key(ckpt) if ckpt else f"random-init:{size}:{crop}",
            "model_id": _ckpt_id(ckpt) if ckpt else "random-init",
            **_method_fields(method),
            "batch_policy": method.get("batch_policy", spec.get("batch_policy", "exact")),
            "batch_size": int(spec["batch_size"]),
            "backend": spec["backend"],
            "dtype": spec["dtype"],
            "threads": env.get("torch_threads") if kind.split(":")[0] == "cpu" else None,
            "images_per_s": float(r["timing"]["images_per_s"]),
            "per_image_ms": float(r["timing"]["per_image_ms"]),
            "gflops": r.get("gflops"),
            "tokens_after": [float(t) for t in _get(r, "tokens", "after_step_mean", default=[]) or []],
        })
    return pd.DataFrame(rows, columns=TIMING_COLUMNS)


def _method_sort_key(method_name: str, batch_policy: str, schedule: Sequence[int], method_key_: str) -> tuple:
    return (METHOD_ORDER.get(method_name, len(METHOD_ORDER)), method_name, batch_policy != "exact",
            len(schedule), list(schedule), method_key_)


# --------------------------------------------------------------------------------------------- timing columns

class TimingColumn:
    """The benchmark points of one column: one target, backend and batch size.

    ``kind`` ``"ips"``: images/s (speedup = images/s over dense's); ``"ms"``: ms per image
    (speedup = dense's ms over the method's). Every point must come from one device, dtype and
    (on CPUs) thread count, unless ``allow_mixed`` — then the column is marked MIXED.
    """

    def __init__(self, points: pd.DataFrame, *, target: str, backend: str, batch_size: int, kind: str, label: str,
                 allow_mixed: bool = False, warnings: list[str] | None = None) -> None:
        self.target, self.backend, self.batch_size, self.kind, self.label = target, backend, batch_size, kind, label
        self.where = f"target {target!r}, backend {backend}, batch {batch_size}"
        setups: dict[tuple, list[str]] = {}
        for p in points.itertuples():
            setups.setdefault(self._setup(p), []).append(str(p.file))
        self.setups = sorted(setups, key=str)
        self.mixed = len(setups) > 1
        if self.mixed and not allow_mixed:
            detail = "; ".join(f"{self._setup_text(s)} ({', '.join(files[:2])}{', ...' if len(files) > 2 else ''})"
                               for s, files in sorted(setups.items(), key=lambda kv: str(kv[0])))
            raise ConfigError(f"{self.where}: results from different hardware or settings cannot share one column: "
                              f"{detail}. Name one target per device, or pass --allow-mixed to mark the column instead")
        self.cells: dict[tuple[str, str], Any] = {}
        for (mk, kk), g in points.groupby(["model_key", "method_key"], sort=False):
            rows = list(g.itertuples())
            if len({self._value(x) for x in rows}) > 1 or len({self._setup(x) for x in rows}) > 1:
                files = ", ".join(str(x.file) for x in rows)
                if not allow_mixed:
                    raise ConfigError(f"{self.where}: {rows[0].model} {rows[0].label} measured more than once with "
                                      f"different results ({files}); remove the stale file(s)")
                if warnings is not None:
                    warnings.append(f"{self.where}: {rows[0].label} measured more than once ({files}); the last is used")
            self.cells[(mk, kk)] = rows[-1]
        self.dense = {mk: row for (mk, kk), row in self.cells.items() if row.method_name == "none"}
        self.device_text = self._setup_text(self.setups[0]) if len(self.setups) == 1 else "MIXED devices/settings"
        self.weights = sorted({row.weights for row in self.cells.values()})

    def _setup(self, p) -> tuple:
        return (p.device, p.dtype, p.threads if p.threads is not None and not pd.isna(p.threads) else None)

    @staticmethod
    def _setup_text(s: tuple) -> str:
        device, dtype, threads = s
        if threads is None:
            return f"{device}, {dtype}"
        return f"{device}, {dtype}, {int(threads)} thread{'s' if int(threads) != 1 else ''}"

    def _value(self, p) -> float:
        return float(p.images_per_s if self.kind == "ips" else p.per_image_ms)

    # -- headers and notes
    @property
    def _where_short(self) -> str:
        if self.mixed:
            return f"{self.target}: MIXED devices"
        device = self.setups[0][0]
        return _short_device(device) if self.target in (device, _short_device(device)) else \
            f"{self.target}: {_short_device(device)}"

    @property
    def value_header(self) -> str:
        what = "img/s" if self.kind == "ips" else "ms/img"
        return f"{what} {self.label} ({self._where_short})"

    @property
    def speedup_header(self) -> str:
        return f"speedup {self.label}" + ("" if self.kind == "ips" else f" ({self.target})")

    @property
    def device_header(self) -> str:
        return f"device ({self.value_header})"

    def note(self) -> str:
        what = "images/s" if self.kind == "ips" else "per-image latency (ms; median of a batch / batch size)"
        weights = " and ".join(self.weights)
        return (f"{self.value_header}: {what} on target {self.target} ({self.device_text}), backend {self.backend}, "
                f"batch {self.batch_size}, weights {weights}; speedup over the dense model in the same column.")

    # -- values
    def resolve_model(self, info: dict, eval_ids: dict[str, set[str]]) -> tuple[str | None, str]:
        """The model key of this column's points that timed the evaluated model ``info``, and how it was found."""
        keys = {mk for mk, _ in self.cells}
        if info["model_key"] in keys:
            return info["model_key"], "checkpoint"
        by_name = {mk for (mk, _), row in self.cells.items()
                   if row.weights == "checkpoint" and row.model_id == info["model_id"]}
        if len(by_name) == 1 and len(eval_ids.get(info["model_id"], ())) <= 1:
            return next(iter(by_name)), "checkpoint (matched by file name)"
        random = {mk for (mk, _), row in self.cells.items()
                  if row.weights == "random-init" and str(row.size) == str(info["size"])
                  and (info["crop"] is None or _crop(row.crop) is None or _crop(row.crop) == info["crop"])}
        if len(random) == 1:
            return next(iter(random)), "random-init"
        return None, ""

    def value(self, model_key: str | None, method_key_: str) -> float:
        row = self.cells.get((model_key, method_key_)) if model_key else None
        return self._value(row) if row is not None else math.nan

    def speedup(self, model_key: str | None, method_key_: str) -> float:
        row = self.cells.get((model_key, method_key_)) if model_key else None
        dense = self.dense.get(model_key) if model_key else None
        if row is None or dense is None or self._setup(row) != self._setup(dense):
            return math.nan
        v, d = self._value(row), self._value(dense)
        return v / d if self.kind == "ips" else d / v

    def device(self, model_key: str | None, method_key_: str) -> str | None:
        row = self.cells.get((model_key, method_key_)) if model_key else None
        return self._setup_text(self._setup(row)) if row is not None else None


# --------------------------------------------------------------------------------------------- tables

@dataclass
class Table:
    """A table with its caption (one line) and notes (footnotes), rendered into every format."""

    name: str
    caption: str
    frame: pd.DataFrame
    notes: list[str] = field(default_factory=list)


@dataclass
class _Group:
    """The evaluations of one dataset, split and model."""

    dataset: str
    split: str
    model_key: str
    rows: pd.DataFrame
    slug: str = ""

    @property
    def info(self) -> dict:
        r = self.rows.iloc[0]
        return {"model_key": self.model_key, "model_id": r["model_id"], "size": r["size"], "crop": _crop(r["crop"])}

    @property
    def title(self) -> str:
        r = self.rows.iloc[0]
        split = f"/{self.split}" if self.split else ""
        return f"{r['model']} ({r['model_id']}) on {self.dataset}{split}"


class Paper:
    """Every table and figure of one set of results.

    ``gpu_target``: target whose images/s of backends math and fa2 (FA2 off/on) at ``batch_size`` fill
    the tables (``None``: the only CUDA target among the results, if there is exactly one). ``cpu_target``: target whose
    per-image latency at ``cpu_batch_sizes`` (backend ``cpu_backend``) fills the cross-platform
    table (``None``: the only CPU target, if exactly one).
    """

    def __init__(self, results: Results, *, gpu_target: str | None = None, cpu_target: str | None = None,
                 batch_size: int = 32, cpu_batch_sizes: Sequence[int] = (1, 2), cpu_backend: str = "math",
                 allow_mixed: bool = False) -> None:
        self.results = results
        self.batch_size, self.cpu_batch_sizes = int(batch_size), tuple(int(b) for b in cpu_batch_sizes)
        self.allow_mixed = allow_mixed
        self.warnings: list[str] = []
        self.ev = eval_frame(results.evals)
        self.tp = timing_frame(results.benches)
        self._check_eval_duplicates()
        self.gpu_target = gpu_target or self._auto_target("cuda", "GPU")
        self.cpu_target = cpu_target or self._auto_target("cpu", "CPU")
        self.gpu_columns = [c for c in (self._column(self.gpu_target, backend, self.batch_size, "ips")
                                        for backend in GPU_BACKENDS) if c is not None]
        self.cpu_columns = [c for c in (self._column(self.cpu_target, cpu_backend, bs, "ms", f"b{bs}")
                                        for bs in self.cpu_batch_sizes) if c is not None]
        self.groups = self._groups()

    # -- set-up
    def _auto_target(self, kind: str, what: str) -> str | None:
        if self.tp.empty:
            return None
        targets = sorted(set(self.tp.loc[self.tp["device_kind"] == kind, "target"].dropna()))
        if len(targets) == 1:
            self.warnings.append(f"{what} target not given: using {targets[0]!r}, the only {kind} target in the results")
            return targets[0]
        if targets:
            self.warnings.append(f"{what} target not given and several {kind} targets found ({', '.join(targets)}): "
                                 f"no {what} columns")
        return None

    def _column(self, target: str | None, backend: str, batch_size: int, kind: str,
                label: str | None = None) -> TimingColumn | None:
        """The column of ``target``'s results with ``backend`` at ``batch_size``, or None. ``label``: default
        the backend as run (:func:`~mpm.tables.bench.backend_label`). A backend the target has no result of
        at any batch size was not asked for: no column, no warning."""
        if not target or self.tp.empty:
            return None
        of_target = self.tp[self.tp["target"] == target]
        if of_target.empty:
            self.warnings.append(f"no benchmark results for target {target!r} (targets found: "
                                 f"{', '.join(sorted(set(self.tp['target'].dropna()))) or 'none'})")
            return None
        sel = of_target[(of_target["backend"] == backend) & (of_target["batch_size"] == batch_size)]
        if sel.empty and not (of_target["backend"] == backend).any():
            return None
        if sel.empty:
            have = sorted({f"{b} bs{s}" for b, s in zip(of_target["backend"], of_target["batch_size"])})
            self.warnings.append(f"target {target!r}: no results with backend {backend} at batch {batch_size} "
                                 f"(found: {', '.join(have)})")
            return None
        if label is None:
            kinds = set(sel["device_kind"])
            label = backend_label(backend, kinds.pop() if len(kinds) == 1 else "mixed")
        return TimingColumn(sel, target=target, backend=backend, batch_size=batch_size, kind=kind, label=label,
                            allow_mixed=self.allow_mixed, warnings=self.warnings)

    def _check_eval_duplicates(self) -> None:
        if self.ev.empty:
            return
        ident = ["dataset", "split", "model_key", "method_key", "extent_key", "eval_setup"]
        keep = []
        for _, g in self.ev.groupby(ident, sort=False):
            if len(g) > 1 and (g["mIoU"].nunique() > 1 or g["gflops"].nunique() > 1):
                raise ConfigError(f"{g['dataset'].iloc[0]} {g['model_id'].iloc[0]} {g['label'].iloc[0]}: evaluated more "
                                  f"than once with different results ({', '.join(map(str, g['file']))}); "
                                  "remove the stale file(s)")
            keep.append(g.index[0])
        self.ev = self.ev.loc[sorted(keep)].reset_index(drop=True)

    def _groups(self) -> list[_Group]:
        if self.ev.empty:
            return []
        groups = []
        for (dataset, split, mk), g in self.ev.groupby(["dataset", "split", "model_key"], sort=False):
            keys = [_method_sort_key(r.method_name, r.batch_policy, r.schedule, r.method_key) + (r.partial,)
                    for r in g.itertuples()]
            rows = g.iloc[sorted(range(len(g)), key=lambda i: keys[i])]
            rows = rows.assign(dmIoU=self._deltas(rows))
            groups.append(_Group(dataset, split, mk, rows.reset_index(drop=True)))
        groups.sort(key=lambda gr: (gr.dataset, gr.split, SIZE_ORDER.get(str(gr.rows["size"].iloc[0]), 9),
                                    gr.rows["model_id"].iloc[0]))
        used: set[str] = set()
        for gr in groups:
            base = _slug(f"{gr.dataset}{'' if gr.split in ('', 'val') else '-' + gr.split}_{gr.rows['model_id'].iloc[0]}")
            slug, n = base, 2
            while slug in used:
                slug, n = f"{base}-{n}", n + 1
            used.add(slug)
            gr.slug = slug
        return groups

    @staticmethod
    def _deltas(rows: pd.DataFrame) -> list[float]:
        """mIoU minus the dense run's of the same extent (same eval setup preferred); NaN without one."""
        dense = rows[rows["method_name"] == "none"]
        out = []
        for r in rows.itertuples():
            same = dense[dense["extent_key"] == r.extent_key]
            pref = same[same["eval_setup"] == r.eval_setup]
            ref = pref if not pref.empty else same
            out.append(r.mIoU - float(ref["mIoU"].iloc[0]) if not ref.empty else math.nan)
        return out

    def _eval_ids(self) -> dict[str, set[str]]:
        ids: dict[str, set[str]] = {}
        for mid, mk in zip(self.ev["model_id"], self.ev["model_key"]):
            ids.setdefault(mid, set()).add(mk)
        return ids

    # -- shared pieces
    def _timing_cells(self, group: _Group, rows: pd.DataFrame, frame: pd.DataFrame, notes: list[str],
                      columns: Sequence[TimingColumn], values: bool = True) -> set[str]:
        """Add each column's values and speedups for ``rows`` to ``frame``; return the weights used."""
        used: set[str] = set()
        ids = self._eval_ids()
        for col in columns:
            mk, how = col.resolve_model(group.info, ids)
            if mk is None:
                notes.append(f"{col.value_header}: no timing of this model on target {col.target}.")
                continue
            used.add("random-init" if how == "random-init" else "checkpoint")
            if values:
                frame[col.value_header] = [col.value(mk, k) for k in rows["method_key"]]
            frame[col.speedup_header] = [col.speedup(mk, k) for k in rows["method_key"]]
            if col.mixed:
                frame[col.device_header] = [col.device(mk, k) for k in rows["method_key"]]
            extra = " Timed with RANDOM-INITIALISED weights of the same architecture (the tokens merged are those " \
                    "of random weights, not of this checkpoint)." if how == "random-init" else \
                    " Model matched by checkpoint file name." if how.startswith("checkpoint (") else ""
            notes.append(col.note() + extra)
        return used

    @staticmethod
    def _provenance(evals: pd.DataFrame, weights: set[str]) -> str:
        parts = []
        if not evals.empty and evals["synthetic"].any():
            parts.append("SYNTHETIC data (dataset.synthetic), not the paper's datasets")
        if "random-init" in weights:
            parts.append("timings with RANDOM-INITIALISED weights (model.weights = random-init)")
        return (" — " + "; ".join(parts) + ".") if parts else ""

    @staticmethod
    def _extent_notes(rows: pd.DataFrame) -> list[str]:
        notes = []
        if rows["partial"].any():
            notes.append("Partial evaluations (an image limit) are marked in `extent`; their mIoU is not comparable "
                         "with full runs, and ΔmIoU is taken only against a dense run of the same extent.")
        missing = rows[rows["dmIoU"].isna()]
        for r in missing.itertuples():
            what = "full" if not r.partial else f"partial, {r.evaluated}/{r.total} images"
            notes.append(f"{r.label} ({r.extent}): no ΔmIoU — no dense run of the same extent ({what}).")
        if rows["eval_setup"].nunique() > 1:
            notes.append("mIoU comes from evaluations on different devices/dtypes/backends: see `eval setup`.")
        return notes

    # -- the tables
    def main_tables(self) -> list[Table]:
        """The main table of each dataset and model."""
        tables = []
        for gr in self.groups:
            rows = gr.rows
            frame = pd.DataFrame({
                "method": rows["method"], "schedule": rows["schedule_text"], "extent": rows["extent"],
                "mIoU": rows["mIoU"], "ΔmIoU": rows["dmIoU"],
                "GFLOPs": pd.to_numeric(rows["gflops"], errors="coerce"),
            })
            notes: list[str] = []
            weights = self._timing_cells(gr, rows, frame, notes, self.gpu_columns)
            if rows["eval_setup"].nunique() > 1:
                frame["eval setup"] = rows["eval_setup"]
            notes = self._extent_notes(rows) + [
                "GFLOPs: per image as evaluated (sliding windows), 1 multiply-add = 2 FLOPs."] + notes
            if not self.gpu_columns:
                notes.append("No GPU throughput columns: " + ("no GPU target given or found." if not self.gpu_target else
                                                              f"no results of target {self.gpu_target!r} at batch "
                                                              f"{self.batch_size} (see warnings)."))
            caption = f"{gr.title}: accuracy, cost and throughput{self._provenance(rows, weights)}"
            tables.append(Table(f"main_{gr.slug}", caption, frame.reset_index(drop=True), notes))
        return tables

    def cross_platform_table(self) -> Table | None:
        """Per model and method: GPU images/s (FA2 off/on) and CPU ms per image, with speedups."""
        columns = self.gpu_columns + self.cpu_columns
        if not columns:
            return None
        keys: dict[tuple[str, str], Any] = {}
        for col in columns:
            for key, row in col.cells.items():
                keys.setdefault(key, row)
        ids: dict[str, set[str]] = {}
        for (mk, _), row in keys.items():
            ids.setdefault(row.model_id, set()).add(mk)
        order = sorted(keys, key=lambda k: (SIZE_ORDER.get(str(keys[k].size), 9), str(keys[k].size), keys[k].weights,
                                            k[0], _method_sort_key(keys[k].method_name, keys[k].batch_policy,
                                                                   keys[k].schedule, k[1])))
        def weights_text(mk: str, row) -> str:
            if row.weights != "checkpoint":
                return row.weights
            return row.model_id if len(ids[row.model_id]) == 1 else f"{row.model_id} ({Path(mk).parent.name})"

        frame = pd.DataFrame({
            "model": [keys[k].model for k in order],
            "weights": [weights_text(k[0], keys[k]) for k in order],
            "method": [keys[k].method for k in order],
            "schedule": [keys[k].schedule_text for k in order],
        })
        notes = []
        for col in columns:
            frame[col.value_header] = [col.value(mk, kk) for mk, kk in order]
            frame[col.speedup_header] = [col.speedup(mk, kk) for mk, kk in order]
            if col.mixed:
                frame[col.device_header] = [col.device(mk, kk) for mk, kk in order]
            notes.append(col.note())
        weights = {keys[k].weights for k in order}
        evals = self.ev[self.ev["model_key"].isin({k[0] for k in order})] if not self.ev.empty else self.ev
        targets = " and ".join(dict.fromkeys(c.target for c in columns))
        caption = f"Throughput and latency across platforms ({targets}){self._provenance(evals, weights)}"
        return Table("cross_platform", caption, frame, notes)

    def ablation_table(self) -> Table | None:
        """MPM's insertion schedules: tokens left after each insertion, GFLOPs, mIoU, ΔmIoU, speedups."""
        parts, notes, weights, synthetic = [], [], set(), []
        for gr in self.groups:
            rows = gr.rows[gr.rows["method_name"].isin(["none", "mpm"])].reset_index(drop=True)
            if not (rows["method_name"] == "mpm").any():
                continue
            frame = pd.DataFrame({
                "dataset": gr.dataset, "model": f"{rows['model'].iloc[0]} ({rows['model_id'].iloc[0]})",
                "method": rows["label"], "extent": rows["extent"],
                "image tokens": pd.to_numeric(rows["image_tokens"], errors="coerce"),
                "tokens after each insertion": [" → ".join(_tokens_text(t) for t in ts) for ts in rows["tokens_after"]],
                "GFLOPs": pd.to_numeric(rows["gflops"], errors="coerce"),
                "mIoU": rows["mIoU"], "ΔmIoU": rows["dmIoU"],
            })
            col_notes: list[str] = []
            weights |= self._timing_cells(gr, rows, frame, col_notes, self.gpu_columns + self.cpu_columns[:1],
                                          values=False)
            notes += [f"{gr.title}: {n}" for n in self._extent_notes(rows)]
            notes += [n for n in col_notes if n not in notes]
            synthetic.append(rows)
            parts.append(frame)
        if not parts:
            return None
        frame = pd.concat(parts, ignore_index=True)
        notes = [("tokens: mean image tokens left after each MPM insertion (over all sliding windows); "
                  "image tokens: before any merge."), *notes]
        caption = "MPM insertion schedules" + self._provenance(pd.concat(synthetic), weights)
        return Table("ablation_schedules", caption, frame, notes)

    def tables(self) -> list[Table]:
        out = self.main_tables()
        for extra in (self.cross_platform_table(), self.ablation_table()):
            if extra is not None:
                out.append(extra)
        return out

    # -- figures
    def figure_data(self, group: _Group) -> tuple[pd.DataFrame, str, str, bool]:
        """Points of one group's Pareto figure: (frame with ``x``, x label, x column, lower is better)."""
        rows = group.rows
        ids = self._eval_ids()
        for col in self.gpu_columns + self.cpu_columns:
            mk, how = col.resolve_model(group.info, ids)
            if mk is None:
                continue
            vals = [col.value(mk, k) for k in rows["method_key"]]
            if col.kind == "ms":
                vals = [1000.0 / v if v and not math.isnan(v) else math.nan for v in vals]
            if any(not math.isnan(v) for v in vals):
                extra = ", random-init weights" if how == "random-init" else ""
                xlabel = (f"images/s ({col.target}: {col.device_text}, {col.backend}, batch {col.batch_size}{extra}"
                          + (", 1000 / ms per image" if col.kind == "ms" else "") + ")")
                return rows.assign(x=vals), xlabel, col.value_header, False
        return rows.assign(x=pd.to_numeric(rows["gflops"], errors="coerce")), \
            "GFLOPs per image (lower is cheaper; no timing)", "GFLOPs", True

    def figures(self) -> Iterable[tuple[str, Any]]:
        """``(name, matplotlib figure)`` pairs: Pareto front and tokens per block of each dataset and model."""
        from mpm.tables.figures import speed_accuracy_figure, tokens_layer_figure

        for gr in self.groups:
            note = "SYNTHETIC data" if gr.rows["synthetic"].any() else None
            data, xlabel, _, lower = self.figure_data(gr)
            yield f"pareto_{gr.slug}", speed_accuracy_figure(data, xlabel=xlabel, title=gr.title,
                                                             lower_is_better=lower, note=note)
            yield f"tokens_{gr.slug}", tokens_layer_figure(gr.rows, title=gr.title, note=note)

    # -- writing
    def write(self, out_tables: str | Path, out_figures: str | Path, index: str | Path | None = None,
              figures: bool = True) -> dict:
        """Write every table and figure; return (and write to ``index``) what was written."""
        from mpm.tables.figures import save_figure

        out_tables, out_figures = Path(out_tables), Path(out_figures)
        out_tables.mkdir(parents=True, exist_ok=True)
        out_figures.mkdir(parents=True, exist_ok=True)
        index = Path(index) if index else out_tables / "index.json"
        written: dict = {
            "schema": INDEX_SCHEMA,
            "tables": [], "figures": [],
            "inputs": {"eval": len(self.results.evals), "bench": len(self.results.benches),
                       "files": len(self.results.files), "duplicates_ignored": self.results.duplicates,
                       "skipped": self.results.skipped},
            "options": {"gpu_target": self.gpu_target, "cpu_target": self.cpu_target, "batch_size": self.batch_size,
                        "cpu_batch_sizes": list(self.cpu_batch_sizes), "allow_mixed": self.allow_mixed},
            "warnings": self.warnings,
        }
        for table in self.tables():
            files = write_table(table, out_tables)
            written["tables"].append({"name": table.name, "caption": table.caption, "notes": table.notes,
                                      "rows": len(table.frame), "columns": [str(c) for c in table.frame.columns],
                                      "files": [str(f) for f in files]})
        if figures:
            for name, fig in self.figures():
                files = save_figure(fig, out_figures, name)
                written["figures"].append({"name": name, "files": [str(f) for f in files]})
        _remove_stale(index, written, (out_tables, out_figures))
        write_json_atomic(index, written)
        return written


def _tokens_text(t: float) -> str:
    return f"{t:.0f}" if abs(t) >= 100 else f"{t:.1f}"


def _remove_stale(index: Path, written: dict, folders: Sequence[Path]) -> None:
    """Delete files a previous run listed in ``index`` that this run did not write (inside ``folders`` only)."""
    try:
        old = json.loads(index.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(old, dict) or old.get("schema") != INDEX_SCHEMA:
        return
    now = {str(Path(f).resolve()) for kind in ("tables", "figures") for e in written[kind] for f in e["files"]}
    roots = [f.resolve() for f in folders]
    for kind in ("tables", "figures"):
        for entry in old.get(kind) or []:
            for f in entry.get("files") or []:
                p = Path(f).resolve()
                if str(p) not in now and any(r in p.parents for r in roots) and p.is_file():
                    p.unlink()


def build_paper(paths: Iterable[str | Path], out_tables: str | Path = "results/tables",
                out_figures: str | Path = "results/figures", *, manifest: str | Path | None = None,
                gpu_target: str | None = None, cpu_target: str | None = None, batch_size: int = 32,
                cpu_batch_sizes: Sequence[int] = (1, 2), cpu_backend: str = "math", allow_mixed: bool = False,
                index: str | Path | None = None, figures: bool = True) -> dict:
    """Read result files/folders (and a manifest), write every table and figure, return the index."""
    results = load_results(paths, manifest)
    if not results.evals and not results.benches:
        raise ConfigError("no mpm.eval/1 or mpm.bench/1 records among the given files")
    paper = Paper(results, gpu_target=gpu_target, cpu_target=cpu_target, batch_size=batch_size,
                  cpu_batch_sizes=cpu_batch_sizes, cpu_backend=cpu_backend, allow_mixed=allow_mixed)
    return paper.write(out_tables, out_figures, index=index, figures=figures)


# --------------------------------------------------------------------------------------------- rendering

def cell_text(column: str, value: Any, missing: str = "—") -> str:
    """A cell as text: 2 decimals by default, 1 for images/s and ms, a sign for Δ, ``missing`` for NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) or (isinstance(value, float) and column == "image tokens"):
        return f"{value:.0f}" if isinstance(value, float) else str(value)
    if isinstance(value, float):
        if column.startswith("Δ"):
            return f"{value:+.2f}"
        if column.startswith(("img/s", "ms/img")):
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def _cells(table: Table, missing: str) -> list[list[str]]:
    cols = [str(c) for c in table.frame.columns]
    return [[cell_text(c, v.item() if hasattr(v, "item") else v, missing) for c, v in zip(cols, row)]
            for row in table.frame.itertuples(index=False)]


def render_markdown(table: Table) -> str:
    """Caption in bold, a GitHub-flavoured table, then the notes as a list."""
    cols = [str(c) for c in table.frame.columns]
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    lines = [f"**{esc(table.caption)}**", "", "| " + " | ".join(map(esc, cols)) + " |",
             "|" + "|".join("---:" if _numeric(table.frame[c]) else "---" for c in table.frame.columns) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in _cells(table, "—")]
    if table.notes:
        lines += [""] + [f"- {n}" for n in table.notes]
    return "\n".join(lines) + "\n"


def _numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


_LATEX = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
          "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
          "Δ": r"$\Delta$", "→": r"$\rightarrow$", "×": r"$\times$", "—": "--", "–": "--", "−": "-",
          "≥": r"$\geq$", "≤": r"$\leq$", "`": ""}


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in str(text))


def render_latex(table: Table) -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs,graphicx}``), notes below it."""
    cols = list(table.frame.columns)
    spec = "".join("r" if _numeric(table.frame[c]) else "l" for c in cols)
    body = [" & ".join(latex_escape(c) for c in row) + r" \\" for row in _cells(table, "--")]
    wide = len(cols) > 8
    lines = [
        "% generated by `mpm tables` (mpm.tables.paper); needs \\usepackage{booktabs} and \\usepackage{graphicx}",
        r"\begin{table}[t]", r"\centering",
        r"\caption{" + latex_escape(table.caption) + "}",
        r"\label{tab:" + table.name.replace("_", "-") + "}",
    ]
    if wide:
        lines.append(r"\resizebox{\linewidth}{!}{%")
    lines += [r"\begin{tabular}{" + spec + "}", r"\toprule",
              " & ".join(latex_escape(c) for c in cols) + r" \\", r"\midrule", *body, r"\bottomrule",
              r"\end{tabular}" + ("}" if wide else "")]
    if table.notes:
        lines += [r"\par\smallskip", r"{\footnotesize", *[latex_escape(n) + r"\par" for n in table.notes], "}"]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def render_csv(table: Table) -> str:
    """The frame as CSV, full precision, empty cells for missing values."""
    return table.frame.to_csv(index=False, lineterminator="\n")


_HTML_STYLE = (
    "body{font-family:system-ui,sans-serif;font-size:14px;margin:1em;color:#222}"
    "caption{caption-side:top;text-align:left;font-weight:600;margin-bottom:.5em}"
    "table{border-collapse:collapse}th,td{padding:.25em .6em;border-bottom:1px solid #ddd}"
    "th{border-bottom:2px solid #444;text-align:left;vertical-align:bottom}td.n,th.n{text-align:right}"
    "td.n{font-variant-numeric:tabular-nums}tbody tr:hover{background:#f3f6fa}ul{color:#555;max-width:70em}"
)


def render_html(table: Table) -> str:
    """A standalone HTML page: the caption, the table (numbers right-aligned, as in Markdown), the notes."""
    cols = [str(c) for c in table.frame.columns]
    numeric = [_numeric(table.frame[c]) for c in table.frame.columns]

    def cell(tag: str, text: str, num: bool) -> str:
        cls = ' class="n"' if num else ""
        return f"<{tag}{cls}>{html.escape(text)}</{tag}>"

    head = "".join(cell("th", c, n) for c, n in zip(cols, numeric))
    body = "\n".join("<tr>" + "".join(cell("td", v, n) for v, n in zip(row, numeric)) + "</tr>"
                     for row in _cells(table, "—"))
    notes = ("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in table.notes) + "</ul>") if table.notes else ""
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(table.name)}"
            f"</title><style>{_HTML_STYLE}</style></head><body>\n<table><caption>{html.escape(table.caption)}"
            f"</caption>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table>\n{notes}\n</body></html>\n")


def write_table(table: Table, folder: str | Path) -> list[Path]:
    """``NAME.md``, ``NAME.tex``, ``NAME.csv`` and ``NAME.html`` under ``folder``, each written atomically."""
    folder = Path(folder)
    return [write_text_atomic(folder / f"{table.name}.md", render_markdown(table)),
            write_text_atomic(folder / f"{table.name}.tex", render_latex(table)),
            write_text_atomic(folder / f"{table.name}.csv", render_csv(table)),
            write_text_atomic(folder / f"{table.name}.html", render_html(table))]
