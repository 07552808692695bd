"""Run ``python -m mpm.cli track ...`` as separate processes (the way the pipeline does)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import forked_cli

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


def start_forked_cli(argvs: list[list[str]], cwd: Path) -> subprocess.Popen:
    """``mpm.cli.main(argv)`` in one forked process per argv, all released at once (:mod:`forked_cli`)."""
    return forked_cli.start(argvs, cwd, cli_env())
