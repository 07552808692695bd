"""MLflow tracking of the pipeline's results: one run per evaluation/benchmark job.

- :mod:`mpm.tracking.store`: where runs go (SQLite under ``results/mlruns`` by default, or a
  tracking server), :func:`init_store` (create + migrate once, create the experiments),
  :func:`ui_command`.
- :mod:`mpm.tracking.log`: :func:`log_result` (idempotent per job key, one run per key even
  with concurrent loggers), :func:`ensure_parent_run` / :func:`finish_parent_run` (the
  invocation's parent run: RUNNING, then FINISHED or FAILED).
- :mod:`mpm.tracking.result`: how a result record (``mpm.eval/1``, ``mpm.bench/1``, read and
  validated by :mod:`mpm.records`) maps to params, metrics, artifacts, tags, times and run name.
- :mod:`mpm.tracking.values`: one string form for params/tags, truncation, valid keys.

Importing this package does not import mlflow (that happens on first use).
"""

from mpm.tracking.log import (
    LogOutcome,
    ensure_parent_run,
    find_runs,
    finish_parent_run,
    log_parent_artifacts,
    log_result,
    track_result,
)
from mpm.tracking.result import TrackedResult, describe_result, job_key_of, read_result
from mpm.tracking.store import (
    DEFAULT_STORE_DIR,
    DEFAULT_TRACKING_URI,
    ENV_TRACKING_URI,
    Store,
    TrackingError,
    init_store,
    open_experiment,
    resolve_store,
    server_command,
    store_lock,
    ui_command,
)
from mpm.tracking.values import clean_key, stringify, truncate

__all__ = [
    "DEFAULT_STORE_DIR",
    "DEFAULT_TRACKING_URI",
    "ENV_TRACKING_URI",
    "LogOutcome",
    "Store",
    "TrackedResult",
    "TrackingError",
    "clean_key",
    "describe_result",
    "ensure_parent_run",
    "find_runs",
    "finish_parent_run",
    "init_store",
    "job_key_of",
    "log_parent_artifacts",
    "log_result",
    "open_experiment",
    "read_result",
    "resolve_store",
    "server_command",
    "store_lock",
    "stringify",
    "track_result",
    "truncate",
    "ui_command",
]
