"""Read one job's result JSON into what MLflow gets: identity, params, metrics, artifacts, tags.

Two kinds of result are understood, each validated on read against its JSON schema
(:mod:`mpm.records`: ``mpm.eval/1``, written by ``mpm eval``; ``mpm.bench/1``, by ``mpm bench``);
a record that does not follow it is refused with a message naming the file and every missing or
invalid field, so nothing half-described is ever logged. What is read:

**Evaluation** (``mpm.eval/1``)::

    {"schema": "mpm.eval/1", "complete": true, "partial": false, "limit": null,
     "created_utc", "started_utc", "finished_utc",
     "dataset": {"name", "split", "root", "num_classes", "synthetic", ...},
     "images": {"evaluated", "total"},
     "checkpoint": {"path", "sha256", "bytes"} | null,
     "model": {"name", "size", "parameters", "config": {...}},
     "method": {"method", "schedule", "batch_policy", ...method kwargs},
     "protocol": {"test_scale", "crop", "stride", "source", ...},
     "run": {"batch_size", "workers"},
     "metrics": {"mIoU", "aAcc", "mAcc"},                         (percent)
     "tokens": {"after_step_mean": [...], "image_tokens": {"mean"},
                "steps": [{"step", "block", "site", "mean", "std", "kept_fraction"}]},
     "gflops": {"per_window", "dense_per_window", ...},
     "images_per_s", "wall_time_s", "device", "dtype", "backend",
     "environment": {...describe_environment()...},
     "per_class_csv": "path.csv"}

**Benchmark** (``mpm.bench/1``, :mod:`mpm.benchmarking.bench`)::

    {"schema": "mpm.bench/1", "spec": {...BenchSpec...}, "method": {...}, "model": {...},
     "environment": {...}, "timing": {"median_ms", "mean_ms", "p10_ms", "p90_ms", "min_ms",
     "max_ms", "iterations", "batch_size", "images_per_s", "per_image_ms"},
     "breakdown_ms": {"embed_and_encoder_ms", "merge_ms", "unmerge_ms", "decoder_ms"},
     "tokens": {"full", "after_step_mean", "after_step_std", "after_step_min", "after_step_max"},
     "gflops": number, "image_source": {...}, "wall_s", "started_utc", "finished_utc", "target": ...}

A remote target's result is the same JSON (its ``environment`` describes the remote host).

The config's *names* of the job (``names``: dataset, model, method, schedule, e.g. schedule ``2-5``;
:mod:`mpm.records.names`) are params ``names.<key>`` and the schedule's name is the tag
``mpm.schedule_name``; they are not part of the identity (the resolved values are).

The *identity* of a job is what the pipeline varies: the wildcard/spec fields (dataset,
split, model/checkpoint, method, schedule, method kwargs, batch policy, batch size, backend,
dtype, device type, limit, protocol, target; for a benchmark its whole spec) plus any extra
params given by the caller. The job key is ``<kind>-<first 20 hex of sha256>`` of the
canonical JSON of the identity (values stringified by :func:`mpm.tracking.values.stringify`),
so it does not depend on key order, on int-vs-str (``8`` vs ``"8"``) or on the machine.

The *job's times* (the run's start and end in MLflow) are the record's ``started_utc`` and
``finished_utc``; a record written before they existed gives its end as ``created_utc`` (else
the file's modification time) and its start as the end minus its wall time. The *model's
config name* (the pipeline's ``models:`` key, e.g. ``seg-t-demo``), which every run name
carries beside the method's and schedule's config names (``bench seg-t-demo mpm/2-5 bs1 ...``,
``eval synthetic/val seg-t-demo tome/all ...``; built in :func:`job_run_name` only), is the record's ``names.model`` when it has one, else the model part of the
pipeline's job path (the extra param ``pipeline.job``: ``eval/<dataset>/<model>/...`` or
``bench/<target>/<model>/...``); without either, an evaluation's run is named by its
architecture (``Seg-T/16-mask``) and a benchmark's by its checkpoint's file name or ViT size.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mpm.records import BenchRecord, EvalRecord, Names, RecordError, model_name_of, parse_record, record_kind, validate_record
from mpm.tracking.store import TrackingError
from mpm.tracking.values import clean_key, flatten, stringify

__all__ = ["TrackedResult", "describe_result", "job_key_of", "job_run_name", "model_config_name", "read_result"]

#: environment keys that are package/toolkit versions (logged as ``version.<key>``)
VERSION_KEYS = ("python", "torch", "torchvision", "timm", "numpy", "mpm", "flash_attn", "onnxruntime",
                "mmsegmentation", "mmcv", "cuda", "cudnn", "driver")
#: environment keys that are measurements, logged as metrics
ENV_METRIC_KEYS = ("soc_temp_before_c", "soc_temp_after_c")
#: values that change from one execution of the same job to the next (node, clock, throttling,
#: GPU index): tags ``mpm.<key>`` (mutable), not params (immutable in MLflow: a changed param
#: value makes :func:`mpm.tracking.log.log_result` replace the run)
VOLATILE_KEYS = ("created_utc", "started_utc", "finished_utc", "env.hostname", "env.device", "env.throttled")
#: the extra param holding the pipeline's job path (``<kind>/<dataset or target>/<model>/...``)
JOB_PATH_PARAM = "pipeline.job"
_METHOD_BASE_KEYS = ("method", "schedule", "batch_policy")


@dataclass
class TrackedResult:
    """A result JSON, as it is logged.

    Attributes:
        path: the result JSON.
        kind: ``eval`` or ``bench``.
        identity: the job-identifying values (stringified), see the module docstring.
        params: every param (identity included), values not yet stringified.
        metrics: single-valued metrics.
        series: stepped metrics, ``name -> [(step, value), ...]``.
        artifacts: files to attach (the JSON first).
        tags: ``mpm.*`` tags describing the result.
        partial: an image limit made the result cover part of the data.
        run_name: a readable run name (it names the model's config name when one is known).
        sha256: digest of the JSON file's bytes.
        start_ms, end_ms: the job's start and end (Unix ms; None when neither the record nor
            its file tells).
        model_name: the model's config name (``seg-t-demo``), None when unknown.
    """

    path: Path
    kind: str
    schema: str | None
    identity: dict[str, str]
    params: dict[str, Any]
    metrics: dict[str, float]
    series: dict[str, list[tuple[int, float]]]
    artifacts: list[Path]
    tags: dict[str, str]
    partial: bool
    run_name: str
    sha256: str
    record: dict[str, Any] = field(repr=False, default_factory=dict)
    start_ms: int | None = None
    end_ms: int | None = None
    model_name: str | None = None

    @property
    def job_key(self) -> str:
        return job_key_of(self.kind, self.identity)


def job_key_of(kind: str, identity: Mapping[str, Any]) -> str:
    """``<kind>-<20 hex>``: sha256 of the canonical JSON of the stringified identity."""
    canon = canonical_identity(identity)
    return f"{kind}-{hashlib.sha256(canon.encode('utf-8')).hexdigest()[:20]}"


def canonical_identity(identity: Mapping[str, Any]) -> str:
    return json.dumps({str(k): stringify(v) for k, v in identity.items()}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False)


def read_result(path: str | os.PathLike, extra_params: Mapping[str, Any] | None = None, *,
                strict_artifacts: bool = True) -> TrackedResult:
    """Read, validate (:mod:`mpm.records`) and describe a result JSON (see :func:`describe_result`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise TrackingError(f"cannot read result {path}: {err.strerror or err}") from err
    try:
        record = parse_record(data, path)
    except RecordError as err:
        raise TrackingError(str(err)) from None
    return _describe(record, path, extra_params, hashlib.sha256(data).hexdigest(), strict_artifacts)


def describe_result(record: Mapping[str, Any], path: str | os.PathLike, extra_params: Mapping[str, Any] | None = None,
                    *, sha256: str | None = None, strict_artifacts: bool = True) -> TrackedResult:
    """What to log for ``record`` (the parsed JSON at ``path``; validated here).

    ``extra_params`` (e.g. Snakemake wildcards) are params *and* part of the identity; they
    override params of the same name read from the result. Listed artifacts that do not
    exist raise :class:`TrackingError` unless ``strict_artifacts`` is false (then the tag
    ``mpm.missing_artifacts`` lists them).
    """
    try:
        record = validate_record(record, path)
    except RecordError as err:
        raise TrackingError(str(err)) from None
    return _describe(record, Path(path), extra_params, sha256, strict_artifacts)


def _describe(record: dict[str, Any], path: Path, extra_params: Mapping[str, Any] | None, sha256: str | None,
              strict_artifacts: bool) -> TrackedResult:
    kind = record_kind(record, path)
    if kind not in _READERS:
        raise TrackingError(f"result {path} is a {record['schema']} record (kind {kind}): only evaluation and "
                            "benchmark results are tracked")
    reader = _READERS[kind](record)
    identity = reader.identity()
    params = dict(identity)
    params.update(reader.params())
    names = reader.names
    params.update({f"names.{k}": v for k, v in names.to_dict().items() if v is not None})
    params.update(_environment_params(record))
    extra = {clean_key(k): v for k, v in (extra_params or {}).items()}
    params.update(extra)
    identity.update(extra)
    identity = {k: stringify(v) for k, v in identity.items()}
    partial = reader.partial()
    params["partial"] = partial
    volatile = {f"mpm.{k}": params.pop(k) for k in VOLATILE_KEYS if k in params}
    metrics, series = reader.metrics()
    env = record["environment"]
    for key in ENV_METRIC_KEYS:
        _put(metrics, key, env.get(key))
    artifacts, missing = _artifacts(record, path, strict_artifacts)
    target = stringify(params.get("target", "local"))
    model_name = model_config_name(record, extra)
    tags = {
        "mpm.kind": kind,
        "mpm.partial": "true" if partial else "false",
        "mpm.schema": record["schema"],
        "mpm.target": target,
        "mpm.result_path": str(path.resolve()),
        "mpm.result_sha256": sha256 or hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest(),
        "mpm.job_identity": canonical_identity(identity),
    }
    if model_name:
        tags["mpm.model"] = model_name
    tags["mpm.schedule_name"] = names.schedule
    tags.update({k: stringify(v) for k, v in volatile.items() if v is not None})
    if missing:
        tags["mpm.missing_artifacts"] = json.dumps(missing)
    run_name = job_run_name(kind, names, identity, model_name or reader.model_fallback(identity))
    start_ms, end_ms = job_times(record, path)
    return TrackedResult(path=path, kind=kind, schema=record["schema"], identity=identity,
                         params={clean_key(k): v for k, v in params.items()}, metrics=metrics, series=series,
                         artifacts=[path.resolve(), *artifacts], tags=tags, partial=partial,
                         run_name=run_name, sha256=tags["mpm.result_sha256"], record=dict(record),
                         start_ms=start_ms, end_ms=end_ms, model_name=model_name)


def job_run_name(kind: str, names: Names, identity: Mapping[str, str], model: str) -> str:
    """The MLflow run name of a job, from the record's config names: the one place run names are built.

    ``eval synthetic/val seg-t-demo tome/all bs4 math float32 cpu``, ``bench seg-t-demo mpm/2-5 bs1 math
    float32 cpu``; `` limit<N>`` for an image limit and `` @<target>`` for a target other than ``local``.
    ``model`` is the model's config name (or what stands in for it: see the module docstring).
    """
    where = f" {names.dataset or identity['dataset']}/{identity['split']}" if kind == "eval" else ""
    name = (f"{kind}{where} {model} {names.method_schedule} bs{identity['batch_size']} "
            f"{identity['backend']} {identity['dtype']} {identity['device']}")
    if identity.get("limit") not in (None, "null"):
        name += f" limit{identity['limit']}"
    if identity.get("target", "local") != "local":
        name += f" @{identity['target']}"
    return name


def model_config_name(record: Mapping[str, Any], extra_params: Mapping[str, Any] | None = None) -> str | None:
    """The model's config name (see the module docstring); None when nothing names it."""
    named = record_names(record).model
    if named:
        return named
    job = (extra_params or {}).get(JOB_PATH_PARAM)
    if isinstance(job, str):
        parts = [p for p in job.split("/") if p]
        if len(parts) >= 3 and parts[0] in ("eval", "bench"):
            return parts[2]
    return None


def record_names(record: Mapping[str, Any]):
    """The config's names of a validated evaluation or benchmark record (:attr:`mpm.records.EvalRecord.names`)."""
    return (EvalRecord if record["schema"] == EvalRecord.schema else BenchRecord)(record).names


def job_times(record: Mapping[str, Any], path: Path | None = None) -> tuple[int | None, int | None]:
    """``(start, end)`` of the job in Unix ms (see the module docstring)."""
    end = _utc_ms(record.get("finished_utc")) or _utc_ms(record.get("created_utc"))
    if end is None and path is not None:
        try:
            end = int(path.stat().st_mtime * 1000)
        except OSError:
            end = None
    start = _utc_ms(record.get("started_utc"))
    if start is None and end is not None:
        wall = _num(record["wall_time_s"] if record["schema"] == EvalRecord.schema else record["wall_s"])
        start = end - int(round(wall * 1000)) if wall is not None and wall >= 0 else end
    if start is not None and end is not None and start > end:
        start = end
    return start, end


def _utc_ms(text: Any) -> int | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(round(when.timestamp() * 1000))


# --------------------------------------------------------------------------- helpers


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if not math.isnan(v) else None  # nan (e.g. an absent class) would only confuse comparisons


def _put(metrics: dict[str, float], key: str, value: Any) -> None:
    v = _num(value)
    if v is not None:
        metrics[key] = v


def _put_series(series: dict[str, list[tuple[int, float]]], key: str, values: Any, steps: list[int] | None = None) -> None:
    if not isinstance(values, (list, tuple)):
        return
    points = []
    for i, value in enumerate(values):
        v = _num(value)
        if v is not None:
            points.append((steps[i] if steps and i < len(steps) else i, v))
    if points:
        series[key] = points


def _device_type(device: Any) -> Any:
    return device.split(":", 1)[0] if isinstance(device, str) else device


def _target(record: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The target's name and details (``local`` when the result names none)."""
    raw = record.get("target")
    if raw is None:
        return "local", {}
    if isinstance(raw, Mapping):  # both schemas require its name
        return str(raw["name"]), {f"target.{k}": v for k, v in flatten(raw).items() if k != "name"}
    return str(raw), {}


def _method_kwargs(method: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in method.items() if k not in _METHOD_BASE_KEYS}


def _environment_params(record: Mapping[str, Any]) -> dict[str, Any]:
    env = record["environment"]
    out: dict[str, Any] = {}
    for k, v in flatten(env).items():
        if k in ENV_METRIC_KEYS or k == "git_commit":
            continue
        out[f"version.{k}" if k in VERSION_KEYS else f"env.{k}"] = v
    commit = env.get("git_commit")
    if commit:
        out["git_commit"], out["git_commit_source"] = commit, "result"
    else:
        local = _local_git_commit()
        out["git_commit"], out["git_commit_source"] = (local, "tracker") if local else (None, "unknown")
    return out


def _local_git_commit() -> str | None:
    """The commit of this checkout (``$MPM_GIT_COMMIT`` first), when the result has none."""
    env = os.environ.get("MPM_GIT_COMMIT")
    if env:
        return env
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _artifacts(record: Mapping[str, Any], path: Path, strict: bool) -> tuple[list[Path], list[str]]:
    """The files a record lists (its per-class CSV), found as given, beside the JSON or in the cwd."""
    listed = [record["per_class_csv"]] if "per_class_csv" in record else []  # a non-empty string (eval schema)
    found, missing = [], []
    for text in listed:
        p = Path(text).expanduser()
        candidates = [p] if p.is_absolute() else [path.parent / p, Path.cwd() / p]
        candidates.append(path.parent / p.name)  # copied back beside the JSON (remote targets)
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            missing.append(text)
        elif hit.resolve() not in found and hit.resolve() != path.resolve():
            found.append(hit.resolve())
    if missing and strict:
        raise TrackingError(f"result {path} lists artifact(s) that do not exist: {', '.join(missing)} "
                            "(looked as given, beside the JSON and in the working directory)")
    return found, missing


# --------------------------------------------------------------------------- kinds


class _Eval:
    """An ``mpm.eval/1`` record (validated: every field read here exists)."""

    def __init__(self, record: Mapping[str, Any]) -> None:
        self.r = record
        self.names = EvalRecord(record).names

    def identity(self) -> dict[str, Any]:
        r = self.r
        method = r["method"]
        target, _ = _target(r)
        ckpt = r["checkpoint"] or {}
        return {
            "kind": "eval",
            "dataset": r["dataset"]["name"],
            "split": r["dataset"]["split"],
            "model": r["model"]["name"],
            "checkpoint_sha256": ckpt.get("sha256") or None,
            "method": method["method"],
            "schedule": method["schedule"],
            "method_kwargs": _method_kwargs(method),
            "batch_policy": method["batch_policy"],
            "batch_size": r["run"]["batch_size"],
            "backend": r["backend"],
            "dtype": r["dtype"],
            "device": _device_type(r["device"]),
            "limit": r["limit"],
            "crop": r["protocol"]["crop"],
            "stride": r["protocol"]["stride"],
            "test_scale": r["protocol"]["test_scale"],
            "target": target,
        }

    def params(self) -> dict[str, Any]:
        r = self.r
        out: dict[str, Any] = {"schema": r["schema"]}
        _, target_details = _target(r)
        out.update(target_details)
        out.update(flatten(r["dataset"], "dataset", skip=("name", "split", "class_names")))
        out.update(flatten(r["model"], "model", skip=("name",)))
        if r["checkpoint"]:
            ck = r["checkpoint"]
            out["checkpoint"] = ck.get("path")
            out.update(flatten({k: v for k, v in ck.items() if k not in ("path", "sha256")}, "checkpoint"))
        for k, v in _method_kwargs(r["method"]).items():
            out[f"method.{k}"] = v
        out.update(flatten(r["protocol"], "protocol", skip=("crop", "stride", "test_scale")))
        out.update(flatten(r["run"], "run", skip=("batch_size", "forwards", "windows")))
        out["images_total"] = r["images"]["total"]
        out["images_evaluated"] = r["images"]["evaluated"]
        for key in ("created_utc", "started_utc", "finished_utc"):
            out[key] = r.get(key)
        return out

    def partial(self) -> bool:
        return bool(self.r["partial"])

    def metrics(self) -> tuple[dict[str, float], dict[str, list[tuple[int, float]]]]:
        r = self.r
        m: dict[str, float] = {}
        s: dict[str, list[tuple[int, float]]] = {}
        for key in ("mIoU", "aAcc", "mAcc"):
            _put(m, key, r["metrics"][key])
        g = r["gflops"]
        _put(m, "gflops", g["per_window"])
        _put(m, "gflops_dense", g["dense_per_window"])
        _put(m, "gflops_ratio_to_dense", g.get("ratio_to_dense"))
        _put(m, "gflops_per_image", g["per_image"])
        _put(m, "gflops_per_image_std", g.get("per_image_std"))
        _put(m, "gflops_padded", g.get("padded_per_window"))
        for part, v in (g.get("breakdown_per_window") or {}).items():
            _put(m, f"gflops_{part}", v)
        tok = r["tokens"]
        full = _num(tok["image_tokens"]["mean"])
        _put(m, "tokens_full", full)
        steps = tok["steps"]
        _put_series(s, "tokens_after_step", tok["after_step_mean"])
        if steps:
            _put_series(s, "tokens_after_step_std", [st.get("std") for st in steps])
            _put_series(s, "tokens_kept_fraction", [st.get("kept_fraction") for st in steps])
            per_block = _tokens_per_block(steps, full, r["model"]["config"]["depth"])
            if per_block:
                s["tokens_in_block"] = per_block
        _put(m, "images_per_s", r["images_per_s"])
        _put(m, "wall_time_s", r["wall_time_s"])
        _put(m, "images_evaluated", r["images"]["evaluated"])
        return m, s

    def model_fallback(self, ident: Mapping[str, str]) -> str:
        """What names the model in the run name when no config name is known: its architecture."""
        return ident["model"]


def _tokens_per_block(steps: list, full: float | None, depth: Any) -> list[tuple[int, float]]:
    """Image tokens entering each encoder block (step = block index), from the merge steps' sites."""
    if full is None or not isinstance(depth, int) or depth <= 0:
        return []
    events = []
    for st in steps:
        block, site, mean = st.get("block"), st.get("site"), _num(st.get("mean"))
        if not isinstance(block, int) or mean is None or site not in ("before_block", "after_attention"):
            return []
        # a merge before block b changes what block b sees; one inside block b, what block b+1 sees
        events.append((block if site == "before_block" else block + 1, mean))
    out, count, k = [], full, 0
    events.sort(key=lambda e: e[0])
    for b in range(depth):
        while k < len(events) and events[k][0] <= b:
            count = events[k][1]
            k += 1
        out.append((b, count))
    return out


class _Bench:
    """An ``mpm.bench/1`` record (validated by ``bench.schema.json``)."""

    def __init__(self, record: Mapping[str, Any]) -> None:
        self.r = record
        self.spec = record["spec"]
        self.names = BenchRecord(record).names

    def identity(self) -> dict[str, Any]:
        target, _ = _target(self.r)
        ident: dict[str, Any] = {"kind": "bench"}
        for k, v in self.spec.items():
            if k in ("target", "names"):  # names: params of their own (names.*), not the job's identity
                continue
            ident[k] = _device_type(v) if k == "device" else v
        ident.setdefault("limit", None)
        ident["target"] = target
        return ident

    def params(self) -> dict[str, Any]:
        r = self.r
        out: dict[str, Any] = {"schema": r["schema"]}
        _, target_details = _target(r)
        out.update(target_details)
        for k, v in _method_kwargs(r["method"]).items():
            out[f"method.{k}"] = v
        out.update(flatten(r["model"], "model"))
        out.update(flatten(r["image_source"], "image_source"))
        out["timing_iterations"] = r["timing"]["iterations"]
        for key in ("started_utc", "finished_utc"):
            out[key] = r.get(key)
        return out

    def partial(self) -> bool:
        return False  # a benchmark point times every iteration it was asked for

    def metrics(self) -> tuple[dict[str, float], dict[str, list[tuple[int, float]]]]:
        r = self.r
        m: dict[str, float] = {}
        s: dict[str, list[tuple[int, float]]] = {}
        timing = r["timing"]
        for key in ("median_ms", "mean_ms", "p10_ms", "p90_ms", "min_ms", "max_ms"):
            _put(m, f"latency_{key}", timing[key])
        _put(m, "images_per_s", timing["images_per_s"])
        _put(m, "per_image_ms", timing["per_image_ms"])
        for key, v in r["breakdown_ms"].items():
            _put(m, f"breakdown_{key}" if key.endswith("_ms") else f"breakdown_{key}_ms", v)
        tok = r["tokens"]
        _put(m, "tokens_full", tok["full"])
        for stat in ("mean", "std", "min", "max"):
            _put_series(s, "tokens_after_step" if stat == "mean" else f"tokens_after_step_{stat}",
                        tok.get(f"after_step_{stat}"))
        _put(m, "gflops", r["gflops"])
        _put(m, "wall_s", r["wall_s"])
        return m, s

    def model_fallback(self, ident: Mapping[str, str]) -> str:
        """What names the model in the run name when no config name is known: its checkpoint's name, or size."""
        return model_name_of(self.r["model"].get("checkpoint")) or ident["model"]


_READERS = {"eval": _Eval, "bench": _Bench}
