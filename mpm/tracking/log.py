"""Log one job's result JSON to MLflow: one run per job, idempotent, under a pipeline parent run.

:func:`log_result` reads the JSON (:mod:`mpm.tracking.result`), opens the *existing*
experiment (jobs never create one: :func:`mpm.tracking.store.init_store` did) and

- finds the job's run by its tag ``mpm.job_key`` (a deterministic key of the job's
  identifying params); none: creates it. So re-logging a job updates its run instead of
  adding a duplicate;
- logs params (every identity/spec field, resolved config values, package versions, git
  commit), metrics (mIoU/aAcc/mAcc or latency statistics, images/s, GFLOPs, token counts;
  per-step token counts as *stepped* metrics), tags (``mpm.job_key``, ``mpm.kind``,
  ``mpm.partial``...) and artifacts (the JSON and the files it lists, e.g. the per-class CSV);
- links it to the invocation's parent run (tag ``mlflow.parentRunId``) when ``parent_key``
  is given; the parent (tag ``mpm.parent_key``) is found or created the same idempotent way.

Times: a job's run starts and ends when the job did (the record's ``started_utc`` and
``finished_utc``, :func:`mpm.tracking.result.job_times`), so the UI's Duration is the job's,
and its metrics are stamped with the job's end.

Re-logging:

- the same file again (same content, params, tags and parent): nothing is written
  (``action == "unchanged"``);
- changed metrics/artifacts/tags: logged into the same run id; new metric values get a
  timestamp later than the previous logging (the job's end, at least 1 ms after the run's
  previous end), so they are the run's latest values (the earlier ones stay in the metric
  history). The run keeps its first start time (MLflow cannot move it);
- a changed *param* value (e.g. a new git commit or package version): MLflow params are
  immutable, so the stale run is deleted (soft: ``mlflow gc`` purges it, the UI can restore
  it) and a fresh run replaces it, tagged ``mpm.replaces=<old run id>``
  (``action == "replaced"``). There is still exactly one active run per job key.

Concurrency. Everything a logger writes for a result is a function of the result and of the
run's state before the logging (metric timestamps included), so two loggers writing the same
result into the same run write the same rows: MLflow keeps one metric history point per
(key, timestamp, step, value), params and tags are set to the same values. What must not
happen twice is *creating* the job's run:

- SQLite store: the whole look-up-then-write runs under the store's file lock.
- Tracking server (no lock spans clients): MLflow's one compare-and-set is that a param,
  once logged, cannot change. A logger that finds no run for its job key *claims* the key
  on the invocation's parent run, logging the param ``mpm.claim.<job key>`` (plus
  ``.<replaced run id>`` when replacing) with a token of its own. The server accepts the
  first value and refuses every other, so exactly one logger creates the run; the others
  wait for it to appear (up to the lock timeout, then an error naming the claim) and log
  into it. So 16 loggers of one new result leave one run, FINISHED, with one history point
  per metric, and no deleted duplicate.
- Without a parent key there is nothing to claim on: after creating its run a logger
  searches again and, if others created runs for the same key, the oldest (start time, then
  run id) wins; the others are ended (KILLED) and deleted. Any two loggers' creations are
  seen together by at least one of them, so every run but the oldest is deleted and the store
  converges to one active run, but soft-deleted duplicates remain until ``mlflow gc``.

Parent runs: ``mpm track parent`` (the pipeline's ``onstart``) creates the invocation's
parent RUNNING; ``mpm track finish`` (``onsuccess`` / ``onerror``) ends it FINISHED or
FAILED. A parent that a job creates because none exists (no ``onstart``, e.g. the key
``manual``) has no one to end it, so it is created FINISHED.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from mpm.tracking.result import TrackedResult, read_result
from mpm.tracking.store import (
    DEFAULT_LOCK_TIMEOUT_S,
    Store,
    TrackingError,
    _quiet_mlflow,
    _short,
    open_experiment,
    resolve_store,
    store_lock,
)
from mpm.tracking.values import (
    PARAM_VALUE_LIMIT,
    TAG_VALUE_LIMIT,
    clean_key,
    stringify,
    truncate,
)

__all__ = [
    "CLAIM_PREFIX",
    "FINGERPRINT_TAG",
    "JOB_KEY_TAG",
    "PARENT_KEY_TAG",
    "PARENT_STATUSES",
    "LogOutcome",
    "ensure_parent_run",
    "find_runs",
    "finish_parent_run",
    "log_parent_artifacts",
    "log_result",
    "track_result",
]

JOB_KEY_TAG = "mpm.job_key"
PARENT_KEY_TAG = "mpm.parent_key"
FINGERPRINT_TAG = "mpm.fingerprint"
PARENT_RUN_TAG = "mlflow.parentRunId"
#: the parent-run param a logger claims a job key with before creating its run (tracking servers)
CLAIM_PREFIX = "mpm.claim."
#: how an invocation's parent run may end
PARENT_STATUSES = ("FINISHED", "FAILED", "KILLED")
_BATCH_PARAMS_TAGS = 100  # MLflow's MAX_PARAMS_TAGS_PER_BATCH
_BATCH_METRICS = 1000  # MAX_METRICS_PER_BATCH
#: tags a re-log keeps even when it does not set them (run identity, history, parent link)
_KEPT_TAGS = frozenset({FINGERPRINT_TAG, "mpm.replaces", "mpm.invocation"})
_KEY_RE = re.compile(r"^[\w.:@+\-/]{1,200}$")
_TERMINAL = frozenset({"FINISHED", "FAILED", "KILLED"})


@dataclass(frozen=True)
class LogOutcome:
    """What :func:`track_result` did.

    ``action``: ``created`` (new run), ``updated`` (logged into the job's existing run),
    ``unchanged`` (identical content already logged: nothing written) or ``replaced`` (a
    param value changed: the old run ``replaced_run_id`` was deleted, a new one created).
    """

    run_id: str
    job_key: str
    experiment_id: str
    action: str
    parent_run_id: str | None = None
    replaced_run_id: str | None = None


def log_result(result_json_path, *, tracking_uri: str | None = None, experiment: str,
               parent_key: str | None = None, extra_params: Mapping[str, Any] | None = None,
               extra_tags: Mapping[str, Any] | None = None, strict_artifacts: bool = True) -> str:
    """Log one result JSON as the job's MLflow run and return the run id (see the module docstring).

    Args:
        result_json_path: an ``mpm.eval/1`` or ``mpm.bench/1`` result.
        tracking_uri: ``sqlite:///...``, a store folder or ``http://host:port``
            (default ``$MPM_TRACKING_URI``, else ``sqlite:///results/mlruns/mlflow.db``).
        experiment: an experiment created by :func:`~mpm.tracking.store.init_store`.
        parent_key: the pipeline invocation's key; the run becomes a child of its parent run.
        extra_params: more identifying params (e.g. Snakemake wildcards); part of the job key.
        extra_tags: more tags (not part of the job key: use them for volatile values).
        strict_artifacts: raise when a listed artifact file is missing (else tag it).
    """
    return track_result(result_json_path, tracking_uri=tracking_uri, experiment=experiment,
                        parent_key=parent_key, extra_params=extra_params, extra_tags=extra_tags,
                        strict_artifacts=strict_artifacts).run_id


def track_result(result_json_path, *, tracking_uri: str | None = None, experiment: str,
                 parent_key: str | None = None, extra_params: Mapping[str, Any] | None = None,
                 extra_tags: Mapping[str, Any] | None = None, strict_artifacts: bool = True,
                 lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S) -> LogOutcome:
    """:func:`log_result`, returning the full :class:`LogOutcome`.

    ``lock_timeout``: seconds to wait for the SQLite store lock, or on a tracking server for
    the run of a job key that another logger claimed.
    """
    if parent_key is not None:
        parent_key = _check_key(parent_key, "parent key")
    tracked = read_result(result_json_path, extra_params, strict_artifacts=strict_artifacts)
    with _experiment(tracking_uri, experiment, f"logging {tracked.path} to", lock_timeout) as (client, exp_id, store):
        parent_id = _ensure_parent(client, exp_id, parent_key) if parent_key else None
        claim_wait = lock_timeout if store.kind == "server" else None  # SQLite: the store lock suffices
        return _upsert(client, exp_id, tracked, parent_key, parent_id, extra_tags or {}, claim_wait)


def ensure_parent_run(tracking_uri: str | None, experiment: str, key: str, *,
                      params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None,
                      running: bool = False, lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S) -> str:
    """The run id of the pipeline invocation ``key``'s parent run in ``experiment``; created once.

    ``running``: a parent created now stays RUNNING until :func:`finish_parent_run` ends it
    (the pipeline's ``onstart``); otherwise it is created FINISHED (nobody would end it).
    An existing parent's status is left as it is.
    """
    key = _check_key(key, "parent key")
    with _experiment(tracking_uri, experiment, f"parent run {key!r} in", lock_timeout) as (client, exp_id, _):
        return _ensure_parent(client, exp_id, key, params or {}, tags or {}, running=running)


def finish_parent_run(tracking_uri: str | None, experiment: str, key: str, status: str = "FINISHED", *,
                      lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S) -> str:
    """End invocation ``key``'s parent run with ``status`` (FINISHED, FAILED, KILLED), now; returns its id."""
    key = _check_key(key, "parent key")
    status = str(status).strip().upper()
    if status not in PARENT_STATUSES:
        raise TrackingError(f"parent run status {status!r}: expected one of {', '.join(PARENT_STATUSES)}")
    with _experiment(tracking_uri, experiment, f"ending parent run {key!r} in", lock_timeout) as (client, exp_id, _):
        run = _winner(client, find_runs(client, exp_id, PARENT_KEY_TAG, key))
        if run is None:
            raise TrackingError(f"experiment {experiment!r} has no parent run with key {key!r} "
                                "(`mpm track parent` creates it when the invocation starts)")
        client.set_terminated(run.info.run_id, status, end_time=max(_now_ms(), run.info.start_time or 0))
        return run.info.run_id


def log_parent_artifacts(tracking_uri: str | None, experiment: str, key: str, paths: Iterable[str],
                         artifact_path: str | None = None, *,
                         lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S) -> str:
    """Log files (tables, figures) as artifacts of invocation ``key``'s parent run; returns its id."""
    from pathlib import Path

    files = [Path(p) for p in paths]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise TrackingError(f"cannot log missing artifact file(s): {', '.join(missing)}")
    key = _check_key(key, "parent key")
    with _experiment(tracking_uri, experiment, f"artifacts of parent run {key!r} in", lock_timeout) as (client, exp_id, _):
        run_id = _ensure_parent(client, exp_id, key)
        for f in files:
            client.log_artifact(run_id, str(f), artifact_path)
    return run_id


@contextlib.contextmanager
def _experiment(tracking_uri: str | None, experiment: str, what: str,
                lock_timeout: float) -> Iterator[tuple[Any, str, Store]]:
    """``(client, experiment id, store)`` of an existing experiment, under the store lock.

    MLflow errors become a :class:`TrackingError` reading "WHAT experiment NAME of URI: ...".
    """
    store = resolve_store(tracking_uri)
    _prepare(store)
    from mlflow.exceptions import MlflowException

    try:
        with store_lock(store, lock_timeout):
            client = store.client()
            yield client, open_experiment(client, store, experiment), store
    except MlflowException as err:
        raise TrackingError(f"{what} experiment {experiment!r} of {store.uri}: {_short(err)}") from err


def _check_key(key: str, what: str) -> str:
    key = str(key).strip()
    if not key or not _KEY_RE.match(key):
        raise TrackingError(f"{what} {key!r}: use letters, digits and _ . : @ + - / only")
    return key


def find_runs(client, experiment_id: str, tag: str, value: str) -> list:
    """Active runs of ``experiment_id`` whose ``tag`` equals ``value``, oldest first (start time, run id)."""
    from mlflow.entities import ViewType

    quoted = value.replace("\\", "\\\\").replace("'", "\\'")
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=f"tags.`{tag}` = '{quoted}'",
                                  run_view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token)
        runs.extend(page)
        token = getattr(page, "token", None)
        if not token:
            break
    runs.sort(key=lambda r: (r.info.start_time or 0, r.info.run_id))
    return runs


# --------------------------------------------------------------------------- internals


def _prepare(store: Store) -> None:
    """Fail early and clearly: an uninitialised SQLite store, an unreachable server."""
    store.require_initialised()
    if store.kind == "server":
        _check_server(store.uri)
    _quiet_mlflow()
    # the slow imports (seconds) happen here, before the store lock is taken
    import mlflow.tracking

    if store.kind == "sqlite":
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401


def _check_server(uri: str, timeout: float = 10.0) -> None:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=timeout) as resp:
            if resp.status != 200:
                raise TrackingError(f"tracking server {uri} answered /health with HTTP {resp.status}")
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingError(f"tracking server {uri} is not reachable ({reason}); start it first "
                            "(`mpm track server-command` prints a command that serves a SQLite store)") from err


def _now_ms() -> int:
    return int(time.time() * 1000)


def _retire(client, run) -> None:
    """End a duplicate or replaced run (KILLED, unless already ended) and delete it (soft).

    Ended first: a deleted run can no longer be ended, and must not stay RUNNING.
    """
    from mlflow.exceptions import MlflowException

    if run.info.status not in _TERMINAL:
        try:
            client.set_terminated(run.info.run_id, "KILLED", end_time=max(_now_ms(), run.info.start_time or 0))
        except MlflowException:  # deleted meanwhile by another logger (which ended it first)
            pass
    try:
        client.delete_run(run.info.run_id)
    except MlflowException:
        pass


def _winner(client, runs: list):
    """The oldest run of a key; later duplicates (a race without a claim) are ended and deleted."""
    if not runs:
        return None
    for extra in runs[1:]:
        _retire(client, extra)
    return runs[0]


def _ensure_parent(client, exp_id: str, key: str, params: Mapping[str, Any] | None = None,
                   tags: Mapping[str, Any] | None = None, running: bool = False) -> str:
    params = {clean_key(k): truncate(stringify(v), PARAM_VALUE_LIMIT)[0] for k, v in (params or {}).items()}
    runs = find_runs(client, exp_id, PARENT_KEY_TAG, key)
    run = _winner(client, runs)
    if run is None:
        now = _now_ms()
        created = client.create_run(exp_id, start_time=now, run_name=f"pipeline {key}",
                                    tags={PARENT_KEY_TAG: key, "mpm.kind": "pipeline",
                                          "mlflow.source.name": "mpm track parent"})
        _check_experiment(client, created, exp_id)
        run = _winner(client, find_runs(client, exp_id, PARENT_KEY_TAG, key)) or created
        if not running and run.info.run_id == created.info.run_id:
            client.set_terminated(run.info.run_id, "FINISHED", end_time=now)
    existing = dict(run.data.params)
    conflicts = {k: (existing[k], v) for k, v in params.items() if k in existing and existing[k] != v}
    if conflicts:
        raise TrackingError(f"parent run {run.info.run_id} of key {key!r} already has different values for "
                            + ", ".join(f"{k} ({old!r} != {new!r})" for k, (old, new) in conflicts.items()))
    _log_batches(client, run.info.run_id,
                 params={k: v for k, v in params.items() if k not in existing},
                 tags={clean_key(k): truncate(stringify(v), TAG_VALUE_LIMIT)[0] for k, v in (tags or {}).items()})
    return run.info.run_id


def _check_experiment(client, run, exp_id: str) -> None:
    if str(run.info.experiment_id) != str(exp_id):  # never leave a run in "Default" or elsewhere
        client.delete_run(run.info.run_id)
        raise TrackingError(f"run {run.info.run_id} was created in experiment {run.info.experiment_id} "
                            f"instead of {exp_id}; deleted it")


def _prepared_values(tracked: TrackedResult, parent_key: str | None, parent_id: str | None,
                     extra_tags: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    truncated: list[str] = []
    params: dict[str, str] = {}
    for k, v in tracked.params.items():
        params[k], cut = truncate(stringify(v), PARAM_VALUE_LIMIT)
        if cut:
            truncated.append(k)
    tags: dict[str, str] = {}
    raw_tags = {**tracked.tags, JOB_KEY_TAG: tracked.job_key, "mlflow.source.name": "mpm track log",
                **{clean_key(k): v for k, v in extra_tags.items()}}
    if parent_id:
        raw_tags[PARENT_RUN_TAG] = parent_id
        raw_tags["mpm.invocation"] = parent_key
    for k, v in raw_tags.items():
        tags[k], cut = truncate(stringify(v), TAG_VALUE_LIMIT)
        if cut:
            truncated.append(k)
    if truncated:
        tags["mpm.truncated"] = truncate(",".join(sorted(truncated)), TAG_VALUE_LIMIT)[0]
    return params, tags


def _fingerprint(tracked: TrackedResult, params: Mapping[str, str], tags: Mapping[str, str]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"params": params, "tags": tags, "metrics": tracked.metrics,
                         "series": tracked.series, "times": [tracked.start_ms, tracked.end_ms]},
                        sort_keys=True).encode("utf-8"))
    for path in tracked.artifacts:
        h.update(str(path.name).encode("utf-8"))
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def _claim(client, parent_id: str, name: str, token: str) -> str | None:
    """Claim ``name`` on the parent run: None when this logger got it, else the holder's token.

    MLflow refuses to change a logged param, so of concurrent claims exactly one is stored.
    """
    from mlflow.exceptions import MlflowException

    try:
        client.log_param(parent_id, name, token)
        return None
    except MlflowException:
        try:
            holder = client.get_run(parent_id).data.params.get(name)
        except MlflowException:
            holder = None
        if holder is None:  # not a lost claim: some other failure
            raise
        return None if holder == token else holder


def _await_run(client, exp_id: str, key: str, not_id: str | None, wait_s: float, claim: str, holder: str,
               parent_id: str):
    """The run that the holder of ``claim`` creates for job key ``key`` (polled, up to ``wait_s``)."""
    deadline = time.monotonic() + wait_s
    delay = 0.05
    while True:
        runs = [r for r in find_runs(client, exp_id, JOB_KEY_TAG, key) if r.info.run_id != not_id]
        if runs:
            return _winner(client, runs)
        if time.monotonic() >= deadline:
            raise TrackingError(
                f"job key {key}: claimed by another logger ({holder}, param {claim} of parent run {parent_id}), "
                f"which created no run within {wait_s:.0f} s (did it stop?); log the result again under a "
                "new --parent-key")
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)


def _create_run(client, exp_id: str, tracked: TrackedResult, key: str, parent_id: str | None,
                replaced: str | None, claim_wait: float | None):
    """The job's new run: ``(run, created by this logger?)`` (see "Concurrency" in the module docstring)."""
    if parent_id is not None and claim_wait is not None:
        claim = f"{CLAIM_PREFIX}{key}" + (f".{replaced}" if replaced else "")
        token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        holder = _claim(client, parent_id, claim, token)
        if holder is not None:
            return _await_run(client, exp_id, key, replaced, claim_wait, claim, holder, parent_id), False
    created = client.create_run(exp_id, start_time=tracked.start_ms or _now_ms(), run_name=tracked.run_name,
                                tags={JOB_KEY_TAG: key, "mpm.kind": tracked.kind,
                                      **({"mpm.replaces": replaced} if replaced else {})})
    _check_experiment(client, created, exp_id)
    run = _winner(client, find_runs(client, exp_id, JOB_KEY_TAG, key)) or created
    if run.info.run_id != created.info.run_id:  # lost a race (no claim): the oldest run is the job's
        _retire(client, created)
    return run, run.info.run_id == created.info.run_id


class _RunGone(Exception):
    """The run being logged into was deleted meanwhile (another logger's duplicate clean-up)."""


#: how often a logger starts over when the run it logs into is deleted under it
_RUN_GONE_RETRIES = 20


def _upsert(client, exp_id: str, tracked: TrackedResult, parent_key: str | None, parent_id: str | None,
            extra_tags: Mapping[str, Any], claim_wait: float | None = None) -> LogOutcome:
    """Log ``tracked`` into its job's run (see the module docstring); start over if that run is deleted."""
    params, tags = _prepared_values(tracked, parent_key, parent_id, extra_tags)
    fingerprint = _fingerprint(tracked, params, tags)
    for _ in range(_RUN_GONE_RETRIES):
        try:
            return _upsert_once(client, exp_id, tracked, params, tags, fingerprint, parent_id, claim_wait)
        except _RunGone:
            continue  # without a claim, a logger that lost the race deleted the run: find the oldest again
    raise TrackingError(f"job key {tracked.job_key}: the run logged into was deleted {_RUN_GONE_RETRIES} times "
                        "by other loggers; log the result again")


@contextlib.contextmanager
def _unless_deleted(client, run_id: str) -> Iterator[None]:
    """Turn a write refused because ``run_id`` was deleted meanwhile into :class:`_RunGone`."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException:
        try:
            gone = client.get_run(run_id).info.lifecycle_stage == "deleted"
        except MlflowException:
            gone = False
        if gone:
            raise _RunGone(run_id) from None
        raise


def _upsert_once(client, exp_id: str, tracked: TrackedResult, params: Mapping[str, str], tags: Mapping[str, str],
                 fingerprint: str, parent_id: str | None, claim_wait: float | None) -> LogOutcome:
    key = tracked.job_key
    run = _winner(client, find_runs(client, exp_id, JOB_KEY_TAG, key))
    replaced = None
    if run is not None and any(k in run.data.params and run.data.params[k] != v for k, v in params.items()):
        replaced = run.info.run_id  # params are immutable: replace the run
        _retire(client, run)
        run = None
    mine = False
    if run is None:
        run, mine = _create_run(client, exp_id, tracked, key, parent_id, replaced, claim_wait)
    run_id = run.info.run_id
    if run.data.tags.get(FINGERPRINT_TAG) == fingerprint:  # this very content is logged already
        if run.info.status != "FINISHED":  # its logger stopped before ending the run
            with _unless_deleted(client, run_id):
                client.set_terminated(run_id, "FINISHED", end_time=run.info.end_time or tracked.end_ms or _now_ms())
        return LogOutcome(run_id, key, exp_id, "unchanged", parent_id)
    action = ("replaced" if replaced else "created") if mine else "updated"
    # the job's end, strictly later than everything logged before: the new values become the
    # latest ones; the same for every logger of this result (see "Concurrency")
    ts = max(tracked.end_ms or _now_ms(), (run.info.end_time or 0) + 1, run.info.start_time or 0)
    with _unless_deleted(client, run_id):
        if run.data.tags.get("mlflow.runName") != tracked.run_name:
            _idempotent(client.update_run, run_id, name=tracked.run_name)
        old_params = dict(run.data.params)
        _log_batches(client, run_id, params={k: v for k, v in params.items() if old_params.get(k) != v},
                     tags={k: v for k, v in tags.items() if run.data.tags.get(k) != v},
                     metrics=_metrics(tracked, ts))
        for stale in sorted(set(run.data.tags) - set(tags) - _KEPT_TAGS):
            if stale.startswith("mpm."):  # e.g. mpm.missing_artifacts of an earlier, lenient log
                _delete_tag(client, run_id, stale)
        for path in tracked.artifacts:
            client.log_artifact(run_id, str(path))
        _idempotent(client.set_tag, run_id, FINGERPRINT_TAG, fingerprint)
        _idempotent(client.set_terminated, run_id, "FINISHED", end_time=ts)
    return LogOutcome(run_id, key, exp_id, action, parent_id, replaced)


def _metrics(tracked: TrackedResult, ts: int) -> list:
    from mlflow.entities import Metric

    out = [Metric(clean_key(k), float(v), ts, 0) for k, v in sorted(tracked.metrics.items())]
    for name, points in sorted(tracked.series.items()):
        out.extend(Metric(clean_key(name), float(v), ts, int(step)) for step, v in points)
    return out


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _log_batches(client, run_id: str, *, params: Mapping[str, str] | None = None,
                 tags: Mapping[str, str] | None = None, metrics: list | None = None) -> None:
    from mlflow.entities import Param, RunTag

    p = [Param(k, v) for k, v in (params or {}).items()]
    t = [RunTag(k, v) for k, v in (tags or {}).items()]
    for chunk in _chunks(p, _BATCH_PARAMS_TAGS):
        _idempotent(client.log_batch, run_id, params=chunk)
    for chunk in _chunks(t, _BATCH_PARAMS_TAGS):
        _idempotent(client.log_batch, run_id, tags=chunk)
    for chunk in _chunks(list(metrics or []), _BATCH_METRICS):
        _idempotent(client.log_batch, run_id, metrics=chunk)


#: server-side errors of two clients inserting the same row at once (the loser's insert fails)
_INSERT_RACES = ("UNIQUE constraint failed", "IntegrityError", "duplicate key value", "Duplicate entry",
                 "database is locked")
_IDEMPOTENT_RETRIES = 8


def _delete_tag(client, run_id: str, key: str) -> None:
    """Delete a tag; one that another logger deleted meanwhile is just as gone."""
    from mlflow.exceptions import MlflowException

    try:
        _idempotent(client.delete_tag, run_id, key)
    except MlflowException as err:
        if "No tag with name" not in str(err):
            raise


def _idempotent(write, *args, **kwargs):
    """``write(*args, **kwargs)`` for a write that sets rows to given values, retried when a
    concurrent identical write made the store refuse the insert: the retry finds the row there."""
    from mlflow.exceptions import MlflowException

    for attempt in range(_IDEMPOTENT_RETRIES):
        try:
            return write(*args, **kwargs)
        except MlflowException as err:
            if attempt == _IDEMPOTENT_RETRIES - 1 or not any(t in str(err) for t in _INSERT_RACES):
                raise
            time.sleep(0.02 * 2 ** attempt)
