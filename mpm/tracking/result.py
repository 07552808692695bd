"""Read one job's result JSON into what MLflow gets: identity, params, metrics, artifacts, tags.

Two kinds of result are understood (``schema`` decides; without one, the keys do):

**Evaluation** (``mpm.eval/1``, written by ``mpm eval``; the keys read, all optional
except ``metrics``)::

    {"schema": "mpm.eval/1", "complete": true, "partial": false, "limit": null,
     "dataset": {"name", "split", "root", "num_classes", "synthetic", ...},
     "images": {"evaluated", "total"},
     "checkpoint": {"path", "sha256", "bytes"},
     "model": {"name", "size", "parameters", "config": {...}},
     "method": {"method", "schedule", "batch_policy", ...method kwargs},
     "protocol": {"test_scale", "crop", "stride", "source", ...},
     "run": {"batch_size", "workers"},
     "metrics": {"mIoU", "aAcc", "mAcc"},                         (percent)
     "tokens": {"after_step_mean": [...], "image_tokens": {"mean"},
                "steps": [{"step", "block", "site", "mean", "std", "kept_fraction"}]},
     "gflops": {"per_window", "dense_per_window", ...} | number,
     "images_per_s", "wall_time_s", "device", "dtype", "backend",
     "environment": {...describe_environment()...},
     "per_class_csv": "path.csv" | "artifacts": {"per_class_csv": "path.csv", ...} | [paths],
     "target": "local" | {"name", "kind", "host"}}

**Benchmark** (``mpm.bench/1``, :mod:`mpm.benchmarking.bench`)::

    {"schema": "mpm.bench/1", "spec": {...BenchSpec...}, "method": {...}, "model": {...},
     "environment": {...}, "timing": {"median_ms", "mean_ms", "p10_ms", "p90_ms", "min_ms",
     "max_ms", "iterations", "batch_size", "images_per_s", "per_image_ms"},
     "breakdown_ms": {"embed_and_encoder_ms", "merge_ms", "unmerge_ms", "decoder_ms"},
     "tokens": {"full", "after_step_mean", "after_step_std", "after_step_min", "after_step_max"},
     "gflops": number, "image_source": {...}, "wall_s", "target": ...}

A remote target's result is the same JSON (its ``environment`` describes the remote host).

The *identity* of a job is what the pipeline varies: the wildcard/spec fields (dataset,
split, model/checkpoint, method, schedule, method kwargs, batch policy, batch size, backend,
dtype, device type, limit, protocol, target; for a benchmark its whole spec) plus any extra
params given by the caller. The job key is ``<kind>-<first 20 hex of sha256>`` of the
canonical JSON of the identity (values stringified by :func:`mpm.tracking.values.stringify`),
so it does not depend on key order, on int-vs-str (``8`` vs ``"8"``) or on the machine.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mpm.tracking.store import TrackingError
from mpm.tracking.values import clean_key, flatten, stringify

__all__ = ["TrackedResult", "describe_result", "job_key_of", "read_result"]

#: environment keys that are package/toolkit versions (logged as ``version.<key>``)
VERSION_KEYS = ("python", "torch", "torchvision", "timm", "numpy", "mpm", "flash_attn", "onnxruntime",
                "mmsegmentation", "mmcv", "cuda", "cudnn", "driver")
#: environment keys that are measurements, logged as metrics
ENV_METRIC_KEYS = ("soc_temp_before_c", "soc_temp_after_c")
#: values that change from one execution of the same job to the next (node, clock, throttling,
#: GPU index): tags ``mpm.<key>`` (mutable), not params (immutable in MLflow: a changed param
#: value makes :func:`mpm.tracking.log.log_result` replace the run)
VOLATILE_KEYS = ("created_utc", "env.hostname", "env.device", "env.throttled")
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
        run_name: a readable run name.
        sha256: digest of the JSON file's bytes.
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
    """Read and describe a result JSON (see :func:`describe_result`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise TrackingError(f"cannot read result {path}: {err.strerror or err}") from err
    try:
        record = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise TrackingError(f"result {path} is not valid JSON: {err}") from err
    if not isinstance(record, dict):
        raise TrackingError(f"result {path} holds a JSON {type(record).__name__}, expected an object")
    return describe_result(record, path, extra_params, sha256=hashlib.sha256(data).hexdigest(),
                           strict_artifacts=strict_artifacts)


def describe_result(record: Mapping[str, Any], path: str | os.PathLike, extra_params: Mapping[str, Any] | None = None,
                    *, sha256: str | None = None, strict_artifacts: bool = True) -> TrackedResult:
    """What to log for ``record`` (the parsed JSON at ``path``).

    ``extra_params`` (e.g. Snakemake wildcards) are params *and* part of the identity; they
    override params of the same name read from the result. Listed artifacts that do not
    exist raise :class:`TrackingError` unless ``strict_artifacts`` is false (then the tag
    ``mpm.missing_artifacts`` lists them).
    """
    path = Path(path)
    kind = detect_kind(record, path)
    if record.get("complete") is False:
        raise TrackingError(f"result {path} is marked incomplete (\"complete\": false); not logging it")
    reader = _Eval(record) if kind == "eval" else _Bench(record)
    identity = reader.identity()
    params = dict(identity)
    params.update(reader.params())
    params.update(_environment_params(record))
    extra = {clean_key(k): v for k, v in (extra_params or {}).items()}
    params.update(extra)
    identity.update(extra)
    identity = {k: stringify(v) for k, v in identity.items()}
    partial = reader.partial()
    params["partial"] = partial
    volatile = {f"mpm.{k}": params.pop(k) for k in VOLATILE_KEYS if k in params}
    metrics, series = reader.metrics()
    env = record.get("environment") if isinstance(record.get("environment"), Mapping) else {}
    for key in ENV_METRIC_KEYS:
        _put(metrics, key, env.get(key))
    artifacts, missing = _artifacts(record, path, strict_artifacts)
    target = stringify(params.get("target", "local"))
    tags = {
        "mpm.kind": kind,
        "mpm.partial": "true" if partial else "false",
        "mpm.schema": str(record.get("schema") or "none"),
        "mpm.target": target,
        "mpm.result_path": str(path.resolve()),
        "mpm.result_sha256": sha256 or hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest(),
        "mpm.job_identity": canonical_identity(identity),
    }
    tags.update({k: stringify(v) for k, v in volatile.items() if v is not None})
    if missing:
        tags["mpm.missing_artifacts"] = json.dumps(missing)
    run_name = reader.run_name(identity)
    if target != "local":
        run_name += f" @{target}"
    return TrackedResult(path=path, kind=kind, schema=record.get("schema"), identity=identity,
                         params={clean_key(k): v for k, v in params.items()}, metrics=metrics, series=series,
                         artifacts=[path.resolve(), *artifacts], tags=tags, partial=partial,
                         run_name=run_name, sha256=tags["mpm.result_sha256"], record=dict(record))


def detect_kind(record: Mapping[str, Any], path: Path) -> str:
    schema = str(record.get("schema") or "")
    if schema.startswith("mpm.eval/"):
        return "eval"
    if schema.startswith("mpm.bench/"):
        return "bench"
    if schema:
        raise TrackingError(f"result {path}: unknown schema {schema!r} (expected mpm.eval/1 or mpm.bench/1)")
    if isinstance(record.get("metrics"), Mapping) and "mIoU" in record["metrics"]:
        return "eval"
    if isinstance(record.get("timing"), Mapping):
        return "bench"
    raise TrackingError(f"result {path} has no schema and neither metrics.mIoU (evaluation) nor timing "
                        "(benchmark); nothing to log")


# --------------------------------------------------------------------------- helpers


def _get(record: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    cur: Any = record
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return default
        cur = cur[part]
    return cur


def _first(record: Mapping[str, Any], *dotted: str, default: Any = None) -> Any:
    for d in dotted:
        v = _get(record, d)
        if v is not None:
            return v
    return default


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


def _named(record: Mapping[str, Any], key: str, field: str) -> Any:
    """``record[key][field]`` when ``record[key]`` is a section, else ``record[key]``, else ``spec.<key>``."""
    value = record.get(key)
    if isinstance(value, Mapping):
        value = value.get(field)
    return value if value is not None else _get(record, f"spec.{key}")


def _device_type(device: Any) -> Any:
    return device.split(":", 1)[0] if isinstance(device, str) else device


def _target(record: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The target's name and details (``local`` when the result names none)."""
    raw = _first(record, "target", "spec.target", "environment.target")
    if raw is None:
        return "local", {}
    if isinstance(raw, Mapping):
        name = raw.get("name") or raw.get("host") or raw.get("kind") or "remote"
        return str(name), {f"target.{k}": v for k, v in flatten(raw).items() if k != "name"}
    return str(raw), {}


def _method_kwargs(method: Any) -> dict[str, Any]:
    if not isinstance(method, Mapping):
        return {}
    return {k: v for k, v in method.items() if k not in _METHOD_BASE_KEYS}


def _sched_text(schedule: Any) -> str:
    if isinstance(schedule, (list, tuple)):
        return ",".join(str(s) for s in schedule)
    return "" if schedule in (None, "") else str(schedule)


def _environment_params(record: Mapping[str, Any]) -> dict[str, Any]:
    env = record.get("environment")
    out: dict[str, Any] = {}
    if isinstance(env, Mapping):
        for k, v in flatten(env).items():
            if k in ENV_METRIC_KEYS or k == "git_commit":
                continue
            out[f"version.{k}" if k in VERSION_KEYS else f"env.{k}"] = v
        commit = env.get("git_commit")
    else:
        commit = None
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
    listed: list[str] = []

    def add(value: Any) -> None:
        if isinstance(value, Mapping):
            value = value.get("path")
        if isinstance(value, (str, os.PathLike)) and str(value) and str(value) not in listed:
            listed.append(str(value))

    add(record.get("per_class_csv"))
    arts = record.get("artifacts")
    if isinstance(arts, Mapping):
        for v in arts.values():
            add(v)
    elif isinstance(arts, (list, tuple)):
        for v in arts:
            add(v)
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
    def __init__(self, record: Mapping[str, Any]) -> None:
        self.r = record

    def identity(self) -> dict[str, Any]:
        r = self.r
        method = r.get("method")
        target, _ = _target(r)
        ckpt = r.get("checkpoint") if isinstance(r.get("checkpoint"), Mapping) else {}
        return {
            "kind": "eval",
            "dataset": _named(r, "dataset", "name"),
            "split": _first(r, "dataset.split", "spec.split", "split"),
            "model": _named(r, "model", "name"),
            "checkpoint_sha256": (ckpt.get("sha256") or None) if ckpt else _get(r, "spec.checkpoint_sha256"),
            "method": _named(r, "method", "method") or "none",
            "schedule": _first(r, "method.schedule", "spec.schedule", "schedule", default=[]),
            "method_kwargs": _method_kwargs(method) or _get(r, "spec.method_kwargs", {}),
            "batch_policy": _first(r, "method.batch_policy", "spec.batch_policy", "batch_policy"),
            "batch_size": _first(r, "run.batch_size", "spec.batch_size", "batch_size"),
            "backend": _first(r, "backend", "spec.backend", "environment.attention_backend"),
            "dtype": _first(r, "dtype", "spec.dtype", "environment.dtype"),
            "device": _device_type(_first(r, "device", "spec.device", "environment.device")),
            "limit": _first(r, "limit", "images.limit", "spec.limit"),
            "crop": _get(r, "protocol.crop"),
            "stride": _get(r, "protocol.stride"),
            "test_scale": _get(r, "protocol.test_scale"),
            "target": target,
        }

    def params(self) -> dict[str, Any]:
        r = self.r
        out: dict[str, Any] = {"schema": r.get("schema")}
        _, target_details = _target(r)
        out.update(target_details)
        if isinstance(r.get("dataset"), Mapping):
            out.update(flatten(r["dataset"], "dataset", skip=("name", "split", "class_names")))
        if isinstance(r.get("model"), Mapping):
            out.update(flatten(r["model"], "model", skip=("name",)))
        if isinstance(r.get("checkpoint"), Mapping):
            ck = r["checkpoint"]
            out["checkpoint"] = ck.get("path")
            out.update(flatten({k: v for k, v in ck.items() if k not in ("path", "sha256")}, "checkpoint"))
        if isinstance(r.get("method"), Mapping):
            for k, v in _method_kwargs(r["method"]).items():
                out[f"method.{k}"] = v
        if isinstance(r.get("protocol"), Mapping):
            out.update(flatten(r["protocol"], "protocol", skip=("crop", "stride", "test_scale")))
        if isinstance(r.get("run"), Mapping):
            out.update(flatten(r["run"], "run", skip=("batch_size", "forwards", "windows")))
        if isinstance(r.get("images"), Mapping):
            out["images_total"] = r["images"].get("total")
            out["images_evaluated"] = r["images"].get("evaluated")
        if isinstance(r.get("spec"), Mapping):  # a result written with an explicit spec section
            out.update(flatten(r["spec"], "spec"))
        out["created_utc"] = r.get("created_utc")
        return out

    def partial(self) -> bool:
        r = self.r
        if "partial" in r:
            return bool(r["partial"])
        if isinstance(r.get("images"), Mapping) and "partial" in r["images"]:
            return bool(r["images"]["partial"])
        return _first(r, "limit", "spec.limit") is not None

    def metrics(self) -> tuple[dict[str, float], dict[str, list[tuple[int, float]]]]:
        r = self.r
        m: dict[str, float] = {}
        s: dict[str, list[tuple[int, float]]] = {}
        for key in ("mIoU", "aAcc", "mAcc"):
            _put(m, key, _get(r, f"metrics.{key}"))
        g = r.get("gflops")
        if isinstance(g, Mapping):
            _put(m, "gflops", g.get("per_window"))
            _put(m, "gflops_dense", g.get("dense_per_window"))
            _put(m, "gflops_ratio_to_dense", g.get("ratio_to_dense"))
            _put(m, "gflops_per_image", g.get("per_image"))
            _put(m, "gflops_per_image_std", g.get("per_image_std"))
            _put(m, "gflops_padded", g.get("padded_per_window"))
            for part, v in (g.get("breakdown_per_window") or {}).items():
                _put(m, f"gflops_{part}", v)
        else:
            _put(m, "gflops", g)
        tok = r.get("tokens") if isinstance(r.get("tokens"), Mapping) else {}
        _put(m, "tokens_full", _first(tok, "image_tokens.mean", "full"))
        steps = tok.get("steps") if isinstance(tok.get("steps"), list) else []
        means = tok.get("after_step_mean")
        if means is None and steps:
            means = [st.get("mean") for st in steps]
        _put_series(s, "tokens_after_step", means)
        if steps:
            _put_series(s, "tokens_after_step_std", [st.get("std") for st in steps])
            _put_series(s, "tokens_kept_fraction", [st.get("kept_fraction") for st in steps])
            per_block = _tokens_per_block(steps, _num(_first(tok, "image_tokens.mean", "full")),
                                          _get(r, "model.config.depth"))
            if per_block:
                s["tokens_in_block"] = per_block
        _put(m, "images_per_s", r.get("images_per_s"))
        _put(m, "wall_time_s", r.get("wall_time_s"))
        _put(m, "images_evaluated", _get(r, "images.evaluated"))
        return m, s

    def run_name(self, ident: Mapping[str, str]) -> str:
        sched = _sched_text(_first(self.r, "method.schedule", "spec.schedule", "schedule"))
        method = ident["method"] + (f"({sched})" if sched else "")
        name = (f"eval {ident['dataset']}/{ident['split']} {ident['model']} {method} bs{ident['batch_size']} "
                f"{ident['backend']} {ident['dtype']} {ident['device']}")
        if ident.get("limit") not in (None, "null"):
            name += f" limit{ident['limit']}"
        return name


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
    def __init__(self, record: Mapping[str, Any]) -> None:
        self.r = record
        self.spec = record.get("spec") if isinstance(record.get("spec"), Mapping) else {}

    def identity(self) -> dict[str, Any]:
        target, _ = _target(self.r)
        ident: dict[str, Any] = {"kind": "bench"}
        for k, v in self.spec.items():
            if k == "target":
                continue
            ident[k] = _device_type(v) if k == "device" else v
        ident.setdefault("limit", None)
        ident["target"] = target
        return ident

    def params(self) -> dict[str, Any]:
        r = self.r
        out: dict[str, Any] = {"schema": r.get("schema")}
        _, target_details = _target(r)
        out.update(target_details)
        if isinstance(r.get("method"), Mapping):
            for k, v in _method_kwargs(r["method"]).items():
                out[f"method.{k}"] = v
        if isinstance(r.get("model"), Mapping):
            out.update(flatten(r["model"], "model"))
        if isinstance(r.get("image_source"), Mapping):
            out.update(flatten(r["image_source"], "image_source"))
        out["timing_iterations"] = _get(r, "timing.iterations")
        return out

    def partial(self) -> bool:
        if "partial" in self.r:
            return bool(self.r["partial"])
        return _first(self.r, "limit", "spec.limit") is not None

    def metrics(self) -> tuple[dict[str, float], dict[str, list[tuple[int, float]]]]:
        r = self.r
        m: dict[str, float] = {}
        s: dict[str, list[tuple[int, float]]] = {}
        timing = r.get("timing") if isinstance(r.get("timing"), Mapping) else {}
        for key in ("median_ms", "mean_ms", "p10_ms", "p90_ms", "min_ms", "max_ms"):
            _put(m, f"latency_{key}", timing.get(key))
        _put(m, "images_per_s", timing.get("images_per_s"))
        _put(m, "per_image_ms", timing.get("per_image_ms"))
        for key, v in (r.get("breakdown_ms") or {}).items():
            name = key if key.endswith("_ms") else f"{key}_ms"
            _put(m, f"breakdown_{name}", v)
        tok = r.get("tokens") if isinstance(r.get("tokens"), Mapping) else {}
        _put(m, "tokens_full", tok.get("full"))
        for stat in ("mean", "std", "min", "max"):
            _put_series(s, "tokens_after_step" if stat == "mean" else f"tokens_after_step_{stat}",
                        tok.get(f"after_step_{stat}"))
        g = r.get("gflops")
        _put(m, "gflops", g.get("total", g.get("per_window")) if isinstance(g, Mapping) else g)
        _put(m, "wall_s", r.get("wall_s"))
        return m, s

    def run_name(self, ident: Mapping[str, str]) -> str:
        sched = _sched_text(self.spec.get("schedule"))
        method = ident.get("method", "none") + (f"({sched})" if sched else "")
        model = ident.get("model", "?")
        if "/" in model:
            model = Path(model).parent.name or Path(model).name
        return (f"bench {model} {method} bs{ident.get('batch_size', '?')} {ident.get('backend', '?')} "
                f"{ident.get('dtype', '?')} {ident.get('device', '?')}")
