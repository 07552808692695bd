"""An MLflow tracking server on the submit host, for jobs that run on other machines (a SLURM cluster).

A SQLite file on a shared file system is not safe when jobs on several nodes write to it (file
locks over NFS/Lustre are unreliable). So on a cluster one ``mlflow server`` on the login node
owns the SQLite store (one process, one writer) and every job logs to it over HTTP::

    mpm track server --host 0.0.0.0 --detach      # prints: export MPM_TRACKING_URI=http://login1:5000
    mpm track server --stop

:func:`start_server` creates and migrates the store first (:func:`~mpm.tracking.store.init_store`,
so an old database is upgraded after a backup, as for any other store), starts the server in its
own session, waits until ``/health`` answers and records ``{url, pid, ...}`` in a state file
beside the database (``server.json``). Starting again while it runs returns the running one;
:func:`stop_server` stops the process group the state file names (only if that process is an
``mlflow server``) and removes the file.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from mpm.tracking.store import (
    DEFAULT_TRACKING_URI,
    ENV_TRACKING_URI,
    TrackingError,
    init_store,
    resolve_store,
    server_command,
)

__all__ = ["DEFAULT_PORT", "ServerInfo", "advertised_url", "running_server", "start_server", "stop_server"]

DEFAULT_PORT = 5000
STATE_FILE_NAME = "server.json"
_ANY_HOST = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class ServerInfo:
    """A started server: ``url`` is what jobs use (``MPM_TRACKING_URI``)."""

    url: str
    pid: int
    host: str
    port: int
    store: str
    log_file: str
    state_file: str

    def to_dict(self) -> dict:
        return asdict(self)


def advertised_url(host: str, port: int) -> str:
    """The URL clients use: the host's fully qualified name when the server listens on every interface."""
    name = socket.getfqdn() if host in _ANY_HOST else host
    if ":" in name and not name.startswith("["):
        name = f"[{name}]"
    return f"http://{name}:{int(port)}"


def _probe_url(host: str, port: int) -> str:
    return f"http://127.0.0.1:{int(port)}" if host in _ANY_HOST else advertised_url(host, port)


def _healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host or "0.0.0.0", int(port)))
        except OSError:
            return False
    return True


def _is_mlflow_server(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(b"mlflow" in part for part in cmdline) and b"server" in cmdline


def _store_uri(uri):
    """The store to serve: ``uri``, else ``$MPM_TRACKING_URI`` unless that names a server (the one this
    module started, exported to the jobs), else the default SQLite store."""
    if uri is not None and str(uri).strip():
        return uri
    env = os.environ.get(ENV_TRACKING_URI, "").strip()
    return env if env and not env.lower().startswith(("http://", "https://")) else DEFAULT_TRACKING_URI


def _default_state_file(uri) -> Path:
    store = resolve_store(_store_uri(uri))
    if store.kind != "sqlite":
        raise TrackingError(f"{store.uri} is already a tracking server; `mpm track server` serves a SQLite store "
                            "(give --uri sqlite:///PATH.db or a folder)")
    return store.db_path.with_name(STATE_FILE_NAME)


def _read_state(path: Path) -> ServerInfo | None:
    try:
        return ServerInfo(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def running_server(uri=None, state_file=None) -> ServerInfo | None:
    """The server recorded in the state file, if its process is alive and answers; else None."""
    path = Path(state_file) if state_file else _default_state_file(uri)
    info = _read_state(path)
    if info is None or not _is_mlflow_server(info.pid):
        return None
    return info if _healthy(_probe_url(info.host, info.port)) else None


def start_server(uri=None, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT, artifacts_destination=None,
                 state_file=None, log_file=None, timeout: float = 120.0) -> tuple[ServerInfo, bool]:
    """Start an ``mlflow server`` on the SQLite store ``uri`` in the background; return ``(info, started)``.

    ``started`` is False when the state file names a server that already runs (it is returned
    as is). Raises :class:`TrackingError` naming the host and port when the port is taken, or
    with the end of the server's log when it exits or does not answer within ``timeout`` seconds.
    """
    uri = _store_uri(uri)
    store = resolve_store(uri)
    state = Path(state_file) if state_file else _default_state_file(uri)
    existing = running_server(state_file=state)
    if existing is not None:
        return existing, False
    if not 1 <= int(port) <= 65535:
        raise TrackingError(f"--port {port}: expected 1-65535")
    if not _port_free(host, port):
        raise TrackingError(f"port {port} on {host or '0.0.0.0'} is already in use; pick another with --port")
    init_store(store.uri, ())  # create + migrate here, once: the server then only opens it
    log = Path(log_file) if log_file else state.with_name("server.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = server_command(store.uri, artifacts_destination=artifacts_destination, host=host or "0.0.0.0", port=port)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": os.environ.get("MLFLOW_DISABLE_TELEMETRY", "true")}
    with open(log, "ab") as out:  # the child keeps its own descriptor
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", *cmd[1:]], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    probe = _probe_url(host, port)
    deadline = time.monotonic() + timeout
    while not _healthy(probe):
        if proc.poll() is not None or time.monotonic() > deadline:
            why = f"exited with status {proc.returncode}" if proc.poll() is not None else \
                f"did not answer {probe}/health within {timeout:.0f} s"
            _stop_group(proc.pid)
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise TrackingError(f"mlflow server on {host}:{port} {why} (log {log}): " + " | ".join(tail))
        time.sleep(0.3)
    info = ServerInfo(url=advertised_url(host, port), pid=proc.pid, host=host, port=int(port), store=store.uri,
                      log_file=str(log), state_file=str(state))
    tmp = state.with_name(f".{state.name}.tmp")
    tmp.write_text(json.dumps(info.to_dict(), indent=1) + "\n")
    tmp.replace(state)
    return info, True


def _stop_group(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM the server's process group (the server and its workers), SIGKILL after ``timeout``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)  # reap it when it is our child
            except ChildProcessError:
                pass
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def stop_server(uri=None, state_file=None, timeout: float = 30.0) -> ServerInfo | None:
    """Stop the server the state file names and remove the file; return it (None when none was recorded)."""
    path = Path(state_file) if state_file else _default_state_file(uri)
    info = _read_state(path)
    if info is None:
        return None
    if _is_mlflow_server(info.pid):
        _stop_group(info.pid, timeout)
    path.unlink(missing_ok=True)
    return info
