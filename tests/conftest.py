"""Shared pytest fixtures."""

from __future__ import annotations

import importlib
import sys
import types

import pytest


def import_mmseg():
    """Import mmsegmentation, or skip the test when the optional extra is absent.

    mmcv-lite lacks the compiled ``mmcv._ext`` module that ``mmcv.ops`` loads at
    import time; mmseg's Segmenter needs none of those ops, so an empty stand-in
    module is registered first.
    """
    try:
        importlib.import_module("mmcv")
    except ImportError:
        pytest.skip("mmsegmentation extra not installed (pip install -e '.[mmseg]')")
    if "mmcv._ext" not in sys.modules:
        try:
            importlib.import_module("mmcv._ext")
        except ImportError:
            sys.modules["mmcv._ext"] = types.ModuleType("mmcv._ext")
    try:
        return importlib.import_module("mmseg")
    except ImportError as err:
        pytest.skip(f"mmsegmentation not importable: {err}")


@pytest.fixture(scope="session")
def mmseg():
    return import_mmseg()
