"""Fixtures of the data-layer tests: a local HTTP server and quick retries."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the _data_*.py helpers beside this file

from _data_http import FileServer  # noqa: E402


@pytest.fixture
def server():
    """A fresh file server on 127.0.0.1 (see _data_http.py for its fault switches)."""
    srv = FileServer().start()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _fast_and_isolated(monkeypatch, tmp_path):
    """No backoff sleeps, no real credentials or mirrors leaking in from the environment."""
    monkeypatch.setenv("MPM_DOWNLOAD_BACKOFF", "0.01")
    for var in ("MPM_MIRROR", "MPM_CITYSCAPES_URL", "CITYSCAPES_USERNAME", "CITYSCAPES_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
