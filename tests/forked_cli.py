"""Many ``mpm`` CLI processes released at the same instant, the way concurrent pipeline jobs start.

One launcher imports MLflow and the CLI once, then forks one process per argv (own interpreter
state, own database connections, like the pipeline's jobs) without paying MLflow's import once per
process; a barrier releases them together. Used by tests/tracking and tests/slurm.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_LAUNCHER = r"""
import json, multiprocessing as mp, os, sys
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
import mlflow.tracking, mlflow.store.tracking.sqlalchemy_store  # the slow imports, once, before forking
from mpm.cli import build_parser, main
build_parser()  # imports every command module once
argvs, barrier_s, join_s = json.loads(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
ctx = mp.get_context("fork")
barrier = ctx.Barrier(len(argvs))

def child(argv):
    barrier.wait(barrier_s)
    sys.exit(main(argv))

procs = [ctx.Process(target=child, args=(argv,)) for argv in argvs]
for p in procs:
    p.start()
for p in procs:
    p.join(join_s)
print(json.dumps([p.exitcode for p in procs]))
"""


def start(argvs: list[list[str]], cwd: Path, env: dict[str, str], barrier_s: float = 120,
          join_s: float = 300) -> subprocess.Popen:
    """The launcher as a process; its last stdout line is the JSON list of the children's exit codes."""
    return subprocess.Popen([sys.executable, "-c", _LAUNCHER, json.dumps(argvs), str(barrier_s), str(join_s)],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
