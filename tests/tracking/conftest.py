"""Fixtures of the tracking tests: a real MLflow SQLite store, CLI subprocesses.

MLflow imports and schema migrations take seconds, so one store is created per session
(``session_store``) and shared by the in-process tests (each uses its own job keys or
experiments); the concurrency and server tests build their own fresh stores.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the _track_*.py helpers beside this file

EXPERIMENTS = ("eval", "bench", "misc")


@pytest.fixture(scope="session")
def session_store(tmp_path_factory):
    """A SQLite store initialised once with the experiments eval, bench and misc; yields its folder."""
    from mpm.tracking import init_store

    folder = tmp_path_factory.mktemp("mlruns")
    ids = init_store(f"sqlite:///{folder}/mlflow.db", EXPERIMENTS)
    assert set(ids) == set(EXPERIMENTS)
    return folder


@pytest.fixture(scope="session")
def client(session_store):
    from mpm.tracking import resolve_store

    return resolve_store(session_store).client()


@pytest.fixture(autouse=True)
def _no_env_uri(monkeypatch):
    monkeypatch.delenv("MPM_TRACKING_URI", raising=False)
