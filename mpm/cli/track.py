"""``mpm track``: log the pipeline's result JSONs to MLflow (see :mod:`mpm.tracking`).

    mpm track init --uri sqlite:///results/mlruns/mlflow.db --experiments mpm-eval,mpm-bench
    mpm track parent --key $INVOCATION --experiment mpm-eval        (created RUNNING)
    mpm track log results/eval/x.json --experiment mpm-eval --parent-key $INVOCATION \\
        --param dataset=ade20k --done-file results/eval/x.tracked.json
    mpm track finish --key $INVOCATION --experiment mpm-eval --status FAILED
    mpm track ui-command
"""

from __future__ import annotations

import sys
from pathlib import Path

from mpm.errors import ConfigError

MARKER_SCHEMA = "mpm.track/1"


def _uri_help() -> str:
    from mpm.tracking.store import DEFAULT_TRACKING_URI, ENV_TRACKING_URI

    return (f"tracking store: sqlite:///PATH.db, a folder (its mlflow.db + artifacts/) or http://HOST:PORT "
            f"of an mlflow server (default ${ENV_TRACKING_URI}, else {DEFAULT_TRACKING_URI})")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "track", help="log result JSONs to MLflow (init the store, log a job, parent runs, UI command)",
        description="MLflow tracking of the pipeline: one run per evaluation/benchmark job, idempotent "
                    "per job key, children of a parent run per pipeline invocation.",
    )
    sub = parser.add_subparsers(dest="track_command", metavar="SUBCOMMAND")
    sub.required = True
    uri_help = _uri_help()

    p = sub.add_parser("init", help="create + migrate the store once and create the experiments",
                       description="Create and migrate the tracking store and create the experiments, once, "
                                   "under a file lock (safe to run concurrently). Run it before any job logs.")
    p.add_argument("--uri", default=None, help=uri_help)
    p.add_argument("--experiments", required=True, metavar="A,B", help="comma-separated experiment names")
    p.add_argument("--artifact-root", default=None, metavar="DIR",
                   help="artifact folder of a SQLite store (default: beside the database, artifacts/)")
    p.add_argument("--done-file", default=None, metavar="PATH", help="write {uri, experiments} here (atomically)")
    p.set_defaults(func=run_init)

    p = sub.add_parser("log", help="log one result JSON as its job's run (idempotent)",
                       description="Log an mpm.eval/1 or mpm.bench/1 result JSON: params, metrics, artifacts "
                                   "and tags, into the job's run (found by its job key; created if none).")
    p.add_argument("result", help="result JSON")
    p.add_argument("--uri", default=None, help=uri_help)
    p.add_argument("--experiment", required=True, help="an experiment created by `mpm track init`")
    p.add_argument("--parent-key", default=None, metavar="KEY",
                   help="pipeline invocation key: the run becomes a child of that parent run")
    p.add_argument("--param", dest="params", action="append", default=[], metavar="KEY=VALUE",
                   help="extra identifying param, e.g. a Snakemake wildcard (repeatable; part of the job key)")
    p.add_argument("--tag", dest="tags", action="append", default=[], metavar="KEY=VALUE",
                   help="extra tag (repeatable; not part of the job key)")
    p.add_argument("--allow-missing-artifacts", action="store_true",
                   help="log even when a file the result lists is missing (tag mpm.missing_artifacts)")
    p.add_argument("--done-file", default=None, metavar="PATH",
                   help="write a marker JSON {run_id, job_key, ...} here atomically (a Snakemake output)")
    p.set_defaults(func=run_log)

    p = sub.add_parser("parent", help="create (or find) the parent run of a pipeline invocation; print its id",
                       description="Find or create the parent run tagged mpm.parent_key=KEY in each experiment "
                                   "and print its run id (one line per experiment, in order). A parent created "
                                   "here is RUNNING until `mpm track finish` ends it.")
    p.add_argument("--key", required=True, help="the pipeline invocation id")
    p.add_argument("--uri", default=None, help=uri_help)
    p.add_argument("--experiment", required=True, metavar="NAME[,NAME]", help="experiment(s) of the children")
    p.add_argument("--param", dest="params", action="append", default=[], metavar="KEY=VALUE",
                   help="param of the parent run (repeatable)")
    p.add_argument("--tag", dest="tags", action="append", default=[], metavar="KEY=VALUE",
                   help="tag of the parent run (repeatable)")
    p.add_argument("--done-file", default=None, metavar="PATH", help="write {key, runs: {experiment: run_id}}")
    p.set_defaults(func=run_parent)

    p = sub.add_parser("finish", help="end a pipeline invocation's parent run (FINISHED, FAILED or KILLED)",
                       description="End the parent run tagged mpm.parent_key=KEY in each experiment with STATUS, "
                                   "now (the pipeline's onsuccess / onerror).")
    p.add_argument("--key", required=True, help="the pipeline invocation id")
    p.add_argument("--uri", default=None, help=uri_help)
    p.add_argument("--experiment", required=True, metavar="NAME[,NAME]", help="experiment(s) of the parent run")
    p.add_argument("--status", default="FINISHED", type=str.upper, choices=("FINISHED", "FAILED", "KILLED"),
                   help="how the invocation ended (default FINISHED)")
    p.set_defaults(func=run_finish)

    p = sub.add_parser("artifacts", help="log files (tables, figures) to a pipeline invocation's parent run",
                       description="Log files as artifacts of the parent run tagged mpm.parent_key=KEY.")
    p.add_argument("files", nargs="+", help="files to log")
    p.add_argument("--key", required=True, help="the pipeline invocation id")
    p.add_argument("--uri", default=None, help=uri_help)
    p.add_argument("--experiment", required=True, metavar="NAME")
    p.add_argument("--artifact-path", default=None, metavar="DIR", help="folder inside the run's artifacts")
    p.set_defaults(func=run_artifacts)

    p = sub.add_parser("ui-command", help="print the command that opens the MLflow UI on the store, and the page to open",
                       description="Print the command that serves the MLflow UI on the store, then (as a shell "
                                   "comment) the page to open: the experiment's runs, grouped by kind, with the "
                                   "headline metrics as columns (MLflow 3 would open its GenAI pages).")
    p.add_argument("--uri", default=None, help=uri_help)
    p.add_argument("--experiment", default=None, metavar="NAME", help="open this experiment's runs (default: the list)")
    p.add_argument("--artifact-root", default=None, metavar="DIR", help="as given to `mpm track init`")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=run_ui_command)

    p = sub.add_parser("server-command",
                       help="print an `mlflow server` command serving a SQLite store (jobs then use http://HOST:PORT)")
    p.add_argument("--uri", default=None, help="the SQLite store (default as for init)")
    p.add_argument("--artifacts-destination", default=None, metavar="DIR",
                   help="where the server keeps artifacts (default: the store's artifacts/)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.set_defaults(func=run_server_command)

    from mpm.cli import track_server  # `mpm track server`: a server for jobs on other hosts

    track_server.register(sub)


def parse_pairs(items: list[str] | None, flag: str) -> dict[str, str]:
    """``["a=1", "b=x=y"]`` -> ``{"a": "1", "b": "x=y"}``."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"{flag} {item!r}: empty key")
        out[key] = value
    return out


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"no experiment name in {text!r}")
    return names


def run_artifacts(args) -> int:
    from mpm.tracking.log import log_parent_artifacts

    run_id = log_parent_artifacts(args.uri, args.experiment, args.key, args.files, args.artifact_path)
    print(f"logged {len(args.files)} file(s) to run {run_id}")
    return 0


def run_init(args) -> int:
    from mpm.io import write_json_atomic
    from mpm.tracking.store import init_store, resolve_store

    store = resolve_store(args.uri, args.artifact_root)
    ids = init_store(args.uri, _names(args.experiments), artifact_root=args.artifact_root)
    for name, exp_id in ids.items():
        print(f"experiment {name}: id {exp_id}")
    print(f"tracking store ready: {store.uri}")
    if args.done_file:
        write_json_atomic(args.done_file, {"schema": MARKER_SCHEMA, "tracking_uri": store.uri, "experiments": ids})
    return 0


def run_log(args) -> int:
    import hashlib

    from mpm.io import write_json_atomic
    from mpm.tracking.log import track_result
    from mpm.tracking.store import resolve_store

    store = resolve_store(args.uri)
    out = track_result(args.result, tracking_uri=args.uri, experiment=args.experiment, parent_key=args.parent_key,
                       extra_params=parse_pairs(args.params, "--param"), extra_tags=parse_pairs(args.tags, "--tag"),
                       strict_artifacts=not args.allow_missing_artifacts)
    print(f"{args.result}: run {out.run_id} ({out.action}) in experiment {args.experiment} "
          f"[{out.job_key}]" + (f", replacing {out.replaced_run_id}" if out.replaced_run_id else ""))
    if args.done_file:
        result = Path(args.result)
        write_json_atomic(args.done_file, {
            "schema": MARKER_SCHEMA,
            "run_id": out.run_id,
            "job_key": out.job_key,
            "action": out.action,
            "experiment": args.experiment,
            "experiment_id": out.experiment_id,
            "parent_run_id": out.parent_run_id,
            "tracking_uri": store.uri,
            "result": str(result.resolve()),
            "result_sha256": hashlib.sha256(result.read_bytes()).hexdigest(),
        })
    return 0


def run_parent(args) -> int:
    from mpm.io import write_json_atomic
    from mpm.tracking.log import ensure_parent_run

    params, tags = parse_pairs(args.params, "--param"), parse_pairs(args.tags, "--tag")
    runs = {}
    for name in _names(args.experiment):
        runs[name] = ensure_parent_run(args.uri, name, args.key, params=params, tags=tags, running=True)
        print(runs[name])
    if args.done_file:
        write_json_atomic(args.done_file, {"schema": MARKER_SCHEMA, "key": args.key, "runs": runs})
    return 0


def run_finish(args) -> int:
    from mpm.tracking.log import finish_parent_run

    for name in _names(args.experiment):
        run_id = finish_parent_run(args.uri, name, args.key, args.status)
        print(f"parent run {run_id} ({args.key}) in experiment {name}: {args.status}")
    return 0


def run_ui_command(args) -> int:
    from mpm.tracking.store import format_command, open_experiment, resolve_store, ui_command, ui_url

    print(format_command(ui_command(args.uri, artifact_root=args.artifact_root, host=args.host, port=args.port)))
    store = resolve_store(args.uri, args.artifact_root)
    exp_id = None
    if args.experiment:
        store.require_initialised()
        exp_id = open_experiment(store.client(), store, args.experiment)
    base = store.uri if store.kind == "server" else f"http://{args.host}:{int(args.port)}"
    print(f"# then open {ui_url(base, exp_id)}")
    return 0


def run_server_command(args) -> int:
    from mpm.tracking.store import format_command, server_command

    print(format_command(server_command(args.uri, artifacts_destination=args.artifacts_destination,
                                        host=args.host, port=args.port)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    from mpm.cli import main

    sys.exit(main(["track", *sys.argv[1:]]))
