"""Where runs are tracked: a local SQLite store (default) or an MLflow tracking server.

The default store lives under ``results/mlruns``: the database ``results/mlruns/mlflow.db``
(tracking URI ``sqlite:///results/mlruns/mlflow.db``) and the artifacts under
``results/mlruns/artifacts/<experiment>``. Any of these forms names a store:

- ``sqlite:///relative/path/mlflow.db`` or ``sqlite:////absolute/path/mlflow.db``;
- a plain folder (``results/mlruns``): its ``mlflow.db`` and ``artifacts/``;
- ``http://HOST:PORT`` (or https): a running ``mlflow server``, which owns its database and
  artifact store (start one with :func:`server_command`).

MLflow 3 refuses its plain file store (``file:`` URIs, ``./mlruns`` folders of YAML files)
by default, so those are rejected here with a pointer to the forms above.

Concurrency. On a fresh SQLite database every process that opens it runs the schema
migration, and processes that start together race on it (and on creating experiments:
a run once landed in "Default"). So the store is set up exactly once, by
:func:`init_store` (``mpm track init``, the pipeline's first rule), which creates and
migrates the database and creates the experiments (marked model-training experiments, so
MLflow 3's UI opens them on their runs) under an exclusive ``fcntl`` lock on
``<db>.lock`` (two concurrent inits are safe: the second finds everything done). Jobs
never create a database or an experiment: :func:`open_experiment` fails with a message
naming the missing piece and the command that creates it. Every write of a job to a
SQLite store also holds that lock (:func:`store_lock`), which serialises the short write
transactions of concurrent jobs (no "database is locked") and makes the job-key look-up
and run creation of :func:`mpm.tracking.log.log_result` atomic.

With a tracking server the server serialises database access; nothing is locked here.

``mlflow`` is imported lazily (it takes seconds), so importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from mpm.errors import MPMError

__all__ = [
    "DEFAULT_STORE_DIR",
    "DEFAULT_TRACKING_URI",
    "ENV_TRACKING_URI",
    "EXPERIMENT_KIND",
    "EXPERIMENT_KIND_TAG",
    "RUNS_VIEW_KEY",
    "RUNS_VIEW_TAG",
    "Store",
    "TrackingError",
    "init_store",
    "open_experiment",
    "resolve_store",
    "server_command",
    "runs_view_state",
    "store_lock",
    "ui_command",
    "ui_url",
]

#: the folder of the default store
DEFAULT_STORE_DIR = "results/mlruns"
#: the default tracking URI (relative to the working directory, like the pipeline's results/)
DEFAULT_TRACKING_URI = f"sqlite:///{DEFAULT_STORE_DIR}/mlflow.db"
#: environment variable that overrides the default tracking URI
ENV_TRACKING_URI = "MPM_TRACKING_URI"
#: seconds a process waits for the store lock before giving up
DEFAULT_LOCK_TIMEOUT_S = 600.0
#: the experiment tag MLflow 3's UI reads to pick an experiment's view, and the value of
#: model-training experiments (runs table with metric columns; "genai_development" opens traces)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: the runs view :func:`ui_url` opens: MLflow's UI keeps a shared view state as the experiment
#: tag ``mlflow.sharedViewState.<key>`` and opens it for a URL with ``viewStateShareKey=<key>``
RUNS_VIEW_KEY = "mpm-runs"
RUNS_VIEW_TAG = f"mlflow.sharedViewState.{RUNS_VIEW_KEY}"


class TrackingError(MPMError, RuntimeError):
    """A tracking store, experiment or result that cannot be used as asked."""


def _quiet_mlflow() -> None:
    """Settings applied before mlflow is first imported (the user's own values win).

    Telemetry would try to reach the internet from every job (compute nodes often have none);
    the "View run at" lines MLflow prints for server URIs would clutter every job's log.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # our CLI prints its own line


@dataclass(frozen=True)
class Store:
    """A resolved tracking store.

    Attributes:
        uri: the tracking URI to give MLflow (SQLite paths made absolute).
        kind: ``"sqlite"`` or ``"server"``.
        db_path: the SQLite database file (``None`` for a server).
        artifact_root: folder holding the experiments' artifact folders (``None`` for a
            server: the server decides).
    """

    uri: str
    kind: str
    db_path: Path | None = None
    artifact_root: Path | None = None

    @property
    def lock_path(self) -> Path | None:
        return self.db_path.with_name(self.db_path.name + ".lock") if self.db_path else None

    def artifact_location(self, experiment: str) -> str | None:
        """The artifact location given to a new experiment (a ``file://`` URI; None for a server)."""
        if self.artifact_root is None:
            return None
        return (self.artifact_root / _safe_folder_name(experiment)).resolve().as_uri()

    def is_initialised(self) -> bool:
        return self.kind == "server" or bool(self.db_path and self.db_path.is_file()
                                               and self.db_path.stat().st_size > 0)

    def require_initialised(self) -> None:
        """Raise :class:`TrackingError` unless :func:`init_store` set this store up."""
        if not self.is_initialised():
            raise TrackingError(
                f"tracking store {self.uri} is not initialised ({self.db_path} does not exist); "
                f"create it once before any job logs: mpm track init --uri {shlex.quote(self.uri)} "
                "--experiments NAME[,NAME...]"
            )

    def client(self):
        """An ``MlflowClient`` on this store (imports mlflow)."""
        _quiet_mlflow()
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri)


def _safe_folder_name(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".")
    return keep or "experiment"


def resolve_store(uri: str | os.PathLike | None = None, artifact_root: str | os.PathLike | None = None) -> Store:
    """Resolve a tracking URI, a folder or ``None`` (``$MPM_TRACKING_URI``, else the default).

    ``artifact_root`` (SQLite stores only) overrides ``<db folder>/artifacts``; it only
    matters when experiments are created (:func:`init_store`).
    """
    if uri is None or str(uri).strip() == "":
        uri = os.environ.get(ENV_TRACKING_URI) or DEFAULT_TRACKING_URI
    text = str(uri).strip()
    scheme = urlparse(text).scheme.lower()
    if scheme in ("http", "https"):
        if artifact_root is not None:
            raise TrackingError(f"--artifact-root applies to SQLite stores only; the server at {text} "
                                "decides where artifacts go (mlflow server --artifacts-destination)")
        return Store(uri=text.rstrip("/"), kind="server")
    if scheme == "sqlite":
        prefix = "sqlite:///"
        if not text.startswith(prefix) or len(text) == len(prefix):
            raise TrackingError(f"tracking URI {text!r}: expected sqlite:///relative/path.db or "
                                "sqlite:////absolute/path.db")
        path_part = text[len(prefix):]
        if "?" in path_part:
            raise TrackingError(f"tracking URI {text!r}: query options are not supported here")
        db_path = Path(path_part)  # "/abs" for sqlite:////abs, "rel" for sqlite:///rel
    elif scheme == "file" or (scheme == "" and _looks_like_file_store(Path(text))):
        raise TrackingError(
            f"tracking URI {text!r} names an MLflow file store, which MLflow 3 refuses by default; "
            f"use a SQLite store instead, e.g. --uri sqlite:///{DEFAULT_STORE_DIR}/mlflow.db "
            f"(or the folder {DEFAULT_STORE_DIR}), or a tracking server http://HOST:PORT"
        )
    elif scheme == "" or (len(scheme) == 1 and os.name == "nt"):
        folder = Path(text)
        if folder.suffix == ".db":
            db_path = folder
        else:
            db_path = folder / "mlflow.db"
    else:
        raise TrackingError(f"tracking URI {text!r}: unsupported scheme {scheme!r}; expected sqlite:///..., "
                            "a folder, or http(s)://HOST:PORT")
    db_path = db_path.expanduser().absolute()
    root = Path(artifact_root).expanduser().absolute() if artifact_root is not None else db_path.parent / "artifacts"
    return Store(uri=f"sqlite:///{db_path.as_posix()}", kind="sqlite", db_path=db_path, artifact_root=root)


def _looks_like_file_store(path: Path) -> bool:
    """An existing folder laid out like MLflow's file store (``0/meta.yaml``...)."""
    return path.is_dir() and (path / "0" / "meta.yaml").is_file() and not (path / "mlflow.db").exists()


# --------------------------------------------------------------------------- locking

_held: dict[str, list] = {}  # lock path -> [file object, depth]; re-entrant within a process
_held_guard = threading.RLock()


@contextlib.contextmanager
def store_lock(store: Store, timeout: float = DEFAULT_LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the store's exclusive ``fcntl`` lock (SQLite stores; a no-op for a server).

    Re-entrant within a process (``flock`` on a second descriptor of the same file would
    block on itself). Raises :class:`TrackingError` after ``timeout`` seconds.
    """
    path = store.lock_path
    if path is None:
        yield
        return
    key = str(path)
    with _held_guard:
        if key in _held:
            _held[key][1] += 1
            try:
                yield
            finally:
                _held[key][1] -= 1
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+")  # noqa: SIM115 - kept open while the lock is held
        try:
            _acquire(fh, path, timeout)
        except BaseException:
            fh.close()
            raise
        _held[key] = [fh, 1]
        try:
            yield
        finally:
            _held[key][1] -= 1
            if _held[key][1] == 0:
                del _held[key]
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
                finally:
                    fh.close()


def _acquire(fh, path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise TrackingError(f"gave up after {timeout:.0f} s waiting for the tracking store lock {path} "
                                    "(another mpm track process holds it)") from None
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)


# --------------------------------------------------------------------------- set-up


def init_store(uri: str | os.PathLike | None = None, experiments: Iterable[str] = (), *,
               artifact_root: str | os.PathLike | None = None,
               lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S) -> dict[str, str]:
    """Create and migrate the store once and create ``experiments``; return ``{name: experiment id}``.

    Idempotent and safe to run concurrently (SQLite: under the store lock). Existing
    experiments are kept (a deleted one is restored); a SQLite database with an older
    MLflow schema is upgraded after a copy is saved beside it (``mlflow.db.bak-<rev>``).
    On a server, the server owns the database; only the experiments are created.
    """
    names = _names(experiments)
    store = resolve_store(uri, artifact_root)
    _quiet_mlflow()
    if store.kind == "sqlite":
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401 - slow import, outside the lock

        with store_lock(store, lock_timeout):
            store.db_path.parent.mkdir(parents=True, exist_ok=True)
            store.artifact_root.mkdir(parents=True, exist_ok=True)
            client = _open_sqlite_client(store, upgrade=True)
            return {name: _ensure_experiment(client, store, name) for name in names}
    client = store.client()
    try:
        return {name: _ensure_experiment(client, store, name) for name in names}
    except TrackingError:
        raise
    except Exception as err:  # connection refused, HTTP errors
        raise TrackingError(f"tracking server {store.uri}: {_short(err)}") from err


def _names(experiments: Iterable[str] | str) -> list[str]:
    if isinstance(experiments, str):
        experiments = experiments.split(",")
    names = []
    for raw in experiments:
        name = str(raw).strip()
        if name and name not in names:
            if name == "Default":
                raise TrackingError("experiment name 'Default' is MLflow's catch-all; pick a name of the pipeline's")
            names.append(name)
    return names


def _open_sqlite_client(store: Store, upgrade: bool):
    """The client of an existing (or, with ``upgrade``, new/outdated) SQLite store; hold the lock."""
    from mlflow.exceptions import MlflowException

    try:
        client = store.client()
        client.get_experiment("0")  # opens the store: creates + migrates a new database
        return client
    except MlflowException as err:
        if not upgrade or "out-of-date database schema" not in str(err):
            raise TrackingError(f"tracking store {store.uri}: {_short(err)}") from err
    _upgrade_sqlite(store)
    client = store.client()
    client.get_experiment("0")
    return client


def _upgrade_sqlite(store: Store) -> None:
    import mlflow.store.db.utils as db_utils

    engine = db_utils.create_sqlalchemy_engine(store.uri)
    try:
        rev = db_utils._get_schema_version(engine) or "none"
        backup = store.db_path.with_name(f"{store.db_path.name}.bak-{rev}")
        if not backup.exists():
            shutil.copy2(store.db_path, backup)
        db_utils._upgrade_db(engine)
    finally:
        engine.dispose()


def _ensure_experiment(client, store: Store, name: str) -> str:
    """Create experiment ``name`` (or restore it), a model-training experiment with mpm's runs view; its id.

    The kind (tag :data:`EXPERIMENT_KIND_TAG`) makes MLflow 3's UI treat the experiment as model
    training, not GenAI (a kind already set, e.g. chosen in the UI, is kept); the runs view
    (:data:`RUNS_VIEW_TAG`, :func:`runs_view_state`) is what :func:`ui_url` opens.
    """
    from mlflow.exceptions import MlflowException

    view = json.dumps(runs_view_state(), sort_keys=True)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=store.artifact_location(name),
                                            tags={"mpm.created_by": "mpm track init",
                                                  EXPERIMENT_KIND_TAG: EXPERIMENT_KIND, RUNS_VIEW_TAG: view})
        except MlflowException as err:  # created meanwhile by another client of the same server
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise TrackingError(f"cannot create experiment {name!r} in {store.uri}: {_short(err)}") from err
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    tags = exp.tags or {}
    if EXPERIMENT_KIND_TAG not in tags:  # made by an older mpm
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    if tags.get(RUNS_VIEW_TAG) != view:
        client.set_experiment_tag(exp.experiment_id, RUNS_VIEW_TAG, view)
    return exp.experiment_id


def runs_view_state() -> dict:
    """The runs table ``mpm track ui-command`` opens, as MLflow's UI stores a shared view.

    Runs grouped by ``mpm.kind`` (pipeline, eval, bench; groups open, so the jobs are not folded
    under their parent run), oldest first, with the headline metrics as columns
    (:data:`mpm.tracking.values.VIEW_METRICS`).
    """
    from mpm.tracking.values import VIEW_METRICS

    return {"orderByKey": "attributes.start_time", "orderByAsc": True,
            "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": "mpm.kind"}]},
            "selectedColumns": [f"metrics.`{m}`" for m in VIEW_METRICS]}


def open_experiment(client, store: Store, name: str) -> str:
    """The id of the existing, active experiment ``name``; never creates one."""
    if not name or name == "Default":
        raise TrackingError("an experiment name of the pipeline is required (runs never go to 'Default')")
    try:
        exp = client.get_experiment_by_name(name)
    except Exception as err:
        raise TrackingError(f"tracking store {store.uri}: {_short(err)}") from err
    if exp is None or exp.lifecycle_stage == "deleted":
        try:
            existing = sorted(e.name for e in client.search_experiments() if e.name != "Default")
        except Exception:  # noqa: BLE001 - only for the message
            existing = []
        state = "does not exist" if exp is None else "is deleted"
        raise TrackingError(
            f"experiment {name!r} {state} in {store.uri} (existing: {', '.join(existing) or 'none'}); jobs never "
            f"create experiments: run `mpm track init --uri {shlex.quote(store.uri)} --experiments {name}` first"
        )
    return exp.experiment_id


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:500] if text else type(err).__name__


# --------------------------------------------------------------------------- commands


def ui_command(uri: str | os.PathLike | None = None, *, artifact_root: str | os.PathLike | None = None,
               host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The command that opens the MLflow UI on a store.

    SQLite store: ``mlflow ui --backend-store-uri sqlite:////abs/mlflow.db --default-artifact-root
    /abs/artifacts --host H --port P`` (MLflow 3's ``ui`` is its ``server``; the experiments
    already carry their own artifact locations, read directly from disk; the default root only
    applies to experiments created from the UI). A tracking server already serves the UI: the
    command opens its address in a browser.
    """
    store = resolve_store(uri, artifact_root)
    if store.kind == "server":
        return ["python", "-m", "webbrowser", "-t", store.uri]
    return ["mlflow", "ui", "--backend-store-uri", store.uri, "--default-artifact-root",
            str(store.artifact_root), "--host", host, "--port", str(int(port))]


def ui_url(base: str, experiment_id: str | None = None) -> str:
    """The page to open in the UI at ``base`` (``http://HOST:PORT``): an experiment's runs in mpm's view.

    MLflow 3.17's UI opens every experiment on its GenAI pages unless the sidebar switch (or
    ``workflowType=machine_learning``) says "Model training"; ``viewStateShareKey`` applies
    :func:`runs_view_state`. Without an experiment: the experiment list, on model training.
    """
    base = base.rstrip("/")
    if experiment_id is None:
        return f"{base}/#/experiments?workflowType=machine_learning"
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={RUNS_VIEW_KEY}"


def server_command(uri: str | os.PathLike | None = None, *, artifacts_destination: str | os.PathLike | None = None,
                   host: str = "127.0.0.1", port: int = 5000, workers: int = 1) -> list[str]:
    """An ``mlflow server`` command for a SQLite store that clients then reach at ``http://host:port``.

    Artifacts are proxied by the server (``--artifacts-destination``, default the store's
    artifact folder); one worker, because several would contend for the SQLite file.
    """
    store = resolve_store(uri)
    if store.kind != "sqlite":
        raise TrackingError(f"server_command needs a SQLite store, got {store.uri}")
    dest = Path(artifacts_destination).absolute() if artifacts_destination else store.artifact_root
    return ["mlflow", "server", "--backend-store-uri", store.uri, "--artifacts-destination", str(dest),
            "--host", host, "--port", str(int(port)), "--workers", str(int(workers))]


def format_command(cmd: Sequence[str]) -> str:
    return shlex.join(list(cmd))
