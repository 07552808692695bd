"""Run ``python -m mpm.cli track ...`` as separate processes (the way the pipeline does)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env.pop("MPM_TRACKING_URI", None)
    return env


def start_cli(*args: str, cwd: Path) -> subprocess.Popen:
    """``python -m mpm.cli track ARGS`` as a separate process."""
    return subprocess.Popen([sys.executable, "-m", "mpm.cli", "track", *args], cwd=cwd, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


#: imports mlflow and the CLI once, then forks one process per argv; they start together (barrier)
_LAUNCHER = r"""
import json, multiprocessing as mp, os, sys
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
import mlflow.tracking, mlflow.store.tracking.sqlalchemy_store  # the slow imports, once, before forking
from mpm.cli import build_parser, main
build_parser()  # imports every command module once
argvs = json.loads(sys.argv[1])
ctx = mp.get_context("fork")
barrier = ctx.Barrier(len(argvs))

def child(argv):
    barrier.wait(120)
    sys.exit(main(argv))

procs = [ctx.Process(target=child, args=(argv,)) for argv in argvs]
for p in procs:
    p.start()
for p in procs:
    p.join(300)
print(json.dumps([p.exitcode for p in procs]))
"""


def start_forked_cli(argvs: list[list[str]], cwd: Path) -> subprocess.Popen:
    """``mpm.cli.main(argv)`` in one forked process per argv, all released at once.

    Separate processes like the pipeline's jobs (own interpreter state, own database
    connections), without paying MLflow's import once per process.
    """
    import json

    return subprocess.Popen([sys.executable, "-c", _LAUNCHER, json.dumps(argvs)], cwd=cwd, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
