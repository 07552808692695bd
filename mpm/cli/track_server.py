"""``mpm track server``: an MLflow tracking server on this host for jobs elsewhere (see :mod:`mpm.tracking.server`).

    mpm track server --host 0.0.0.0 --detach     # export MPM_TRACKING_URI=http://login1.example.org:5000
    mpm track server --stop
"""

from __future__ import annotations

import signal
import sys
import time


def register(sub) -> None:
    """Add ``server`` to the ``mpm track`` subcommands."""
    from mpm.tracking.server import DEFAULT_PORT

    p = sub.add_parser(
        "server", help="run an MLflow tracking server on a SQLite store, for jobs on other hosts (a SLURM cluster)",
        description="Start `mlflow server` on the SQLite store (created and migrated first), wait until it "
                    "answers, and print `export MPM_TRACKING_URI=http://HOST:PORT` for the jobs. With --detach it "
                    "keeps running in the background (state in server.json beside the database); --stop stops it.")
    p.add_argument("--uri", default=None, help="the SQLite store it serves: sqlite:///PATH.db or a folder (default "
                                               "$MPM_TRACKING_URI when that is one, else "
                                               "sqlite:///results/mlruns/mlflow.db)")
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on; 0.0.0.0 for jobs on other nodes (then the URL names this host)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--artifacts-destination", default=None, metavar="DIR",
                   help="where the server keeps artifacts (default: the store's artifacts/)")
    p.add_argument("--state-file", default=None, metavar="PATH", help="default: server.json beside the database")
    p.add_argument("--log-file", default=None, metavar="PATH", help="default: server.log beside the database")
    p.add_argument("--timeout", type=float, default=120.0, metavar="S", help="seconds to wait for it to answer")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--detach", action="store_true", help="leave it running in the background and return")
    mode.add_argument("--stop", action="store_true", help="stop the server the state file names")
    p.set_defaults(func=run_server)


def run_server(args) -> int:
    from mpm.tracking.server import start_server, stop_server

    if args.stop:
        info = stop_server(args.uri, state_file=args.state_file)
        print(f"stopped tracking server {info.url} (pid {info.pid})" if info else "no tracking server recorded",
              file=sys.stderr)
        return 0
    info, started = start_server(args.uri, host=args.host, port=args.port,
                                 artifacts_destination=args.artifacts_destination, state_file=args.state_file,
                                 log_file=args.log_file, timeout=args.timeout)
    what = "started" if started else "already running:"
    print(f"tracking server {what} {info.url} (pid {info.pid}, store {info.store}, log {info.log_file})",
          file=sys.stderr)
    print(f"export MPM_TRACKING_URI={info.url}", flush=True)
    if args.detach:
        return 0
    try:  # foreground: until Ctrl-C / SIGTERM, then stop it
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while True:
            time.sleep(1.0)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        stop_server(args.uri, state_file=info.state_file)
    return 0
