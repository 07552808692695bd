"""Shared pytest fixtures."""

from __future__ import annotations

import importlib
import sys
import types

import pytest


def import_mmseg():
    """Import mmsegmentation, or skip the test when the optional extra is absent.

    mmcv-lite lacks the compiled ``mmcv._ext`` module that ``mmcv.ops`` loads at
    import time, and ``mmcv.utils.ext_loader`` checks that the ops it binds exist.
    mmseg's Segmenter uses none of them, so a stand-in module is registered
    whose attributes are placeholders that raise if ever called.
    """
    try:
        importlib.import_module("mmcv")
    except ImportError:
        pytest.skip("mmsegmentation extra not installed (pip install -e '.[mmseg]')")
    if "mmcv._ext" not in sys.modules:
        try:
            importlib.import_module("mmcv._ext")
        except ImportError:
            sys.modules["mmcv._ext"] = _ext_stub()
    try:
        return importlib.import_module("mmseg")
    except ImportError as err:
        pytest.skip(f"mmsegmentation not importable: {err}")


def _ext_stub() -> types.ModuleType:
    stub = types.ModuleType("mmcv._ext")

    def __getattr__(name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def op(*args, **kwargs):
            raise NotImplementedError(f"mmcv._ext.{name} is not available in mmcv-lite")

        return op

    stub.__getattr__ = __getattr__  # type: ignore[attr-defined]
    return stub


@pytest.fixture(scope="session")
def mmseg():
    return import_mmseg()


@pytest.fixture(scope="module")
def seg():
    """A random-initialised Seg-T/16 preset at 128 px with 5 classes."""
    import torch

    from mpm.models import SegmenterConfig, build_segmenter

    torch.manual_seed(0)
    return build_segmenter(SegmenterConfig.preset("T", num_classes=5, image_size=(128, 128)))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """One line naming what was skipped and why, grouped by reason (README: "What a test run needs")."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    reasons: dict[str, int] = {}
    for report in skipped:
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reason = reason.removeprefix("Skipped: ").strip()
        reasons[reason] = reasons.get(reason, 0) + 1
    parts = "; ".join(f"{n} x {reason}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
    terminalreporter.write_line(f"mpm: {len(skipped)} skipped: {parts}")
