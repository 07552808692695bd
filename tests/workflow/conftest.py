"""Fixtures of the workflow tests: the real Snakemake on the repository's workflow, run from the root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from benchmarking.conftest import sshd  # noqa: F401  (a real OpenSSH server on 127.0.0.1)

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake_env() -> dict[str, str]:
    """This environment, with the repository first on PYTHONPATH (the jobs' `mpm` is this checkout's)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}


def snakemake(*args: str, timeout: float = 300, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``snakemake ARGS`` in ``cwd`` (the repository root: where the README runs it)."""
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=snakemake_env())


def tiny_config(tmp_path: Path, **overrides) -> dict:
    """The CI demo shrunk further: 4 + 2 synthetic images of 64 px, 2 training steps, dense and MPM(2,5)."""
    cfg = {
        "experiment": "mpm-workflow-test",
        "data_root": str(tmp_path / "data"),
        "results": str(tmp_path / "results"),
        "datasets": {"synthetic": {"source": "synthetic", "synth": {"n_train": 4, "n_val": 2, "size": 64, "seed": 0}}},
        "models": {"seg-t-demo": {"dataset": "synthetic", "source": "train-demo", "size": "T",
                                  "train": {"seed": 0, "steps": 2, "threads": 1}}},
        "methods": {"none": {"schedules": {"dense": []}}, "mpm": {"schedules": {"2-5": [2, 5]}}},
        "evaluation": {"split": "val", "backend": "math", "dtype": "float32", "device": "cpu", "batch_size": 2,
                       "threads": 1},
        "benchmark": {"split": "val", "warmup": 0, "iters": 1,
                      "points": [{"target": "local", "backends": ["math"], "batch_sizes": [1], "dtype": "float32",
                                  "threads": 1}]},
        "tables": {"gpu_target": "", "cpu_target": "local", "batch_size": 1},
    }
    cfg.update(overrides)
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture
def smk():
    """The helpers above, for the tests of this folder (a test module cannot import this conftest)."""
    return SimpleNamespace(repo=REPO, command=SNAKEMAKE, run=snakemake, env=snakemake_env, tiny_config=tiny_config,
                           write_config=write_config)


@pytest.fixture
def config_file(tmp_path):
    """write(name="config.yaml", **overrides) -> a tiny configuration file under tmp_path."""
    return lambda name="config.yaml", **overrides: write_config(tmp_path / name, tiny_config(tmp_path, **overrides))
