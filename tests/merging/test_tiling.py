"""Which tiling the merge kernels take per batch size (mpm.merging.triton_kernels), without a GPU.

The choice reads the GPU's multiprocessor count; here it is set to the H200's 132, so the rules
are checked at the batch sizes and widths the sweeps measured (NOTES 48-49).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")

CUDA = torch.device("cuda", 0)


@pytest.fixture
def tk(monkeypatch: pytest.MonkeyPatch):
    from mpm.merging import triton_kernels as tk

    monkeypatch.setitem(tk._SM_COUNT, 0, 132)
    return tk


def test_small_batches_take_their_own_tiling(tk) -> None:
    for width in (192, 384, 768, 1024):
        assert tk.partner_tiles(width, 1, 1024, CUDA) == tk.SMALL_TILES[width][1], f"batch 1, C={width}"
        for batch in (2, 3):  # below the next batch listed: the batch-1 entry
            assert tk.partner_tiles(width, batch, 1024, CUDA) == tk.SMALL_TILES[width][1]
        for batch in (4, 7):
            assert tk.partner_tiles(width, batch, 1024, CUDA) == tk.SMALL_TILES[width][4], f"batch {batch}"
        assert tk.partner_tiles(width, 32, 1024, CUDA) == tk.SYMMETRIC_TILES[width], "batch 32: the symmetric kernel"
        assert tk.partner_tiles(width, 1, 1024, torch.device("cpu")) == tk.tile_config(width), "the CPU"


def test_small_tiles_off_and_unknown_widths(tk, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tk, "small_batch_tiles", False)
    assert tk.partner_tiles(768, 1, 1024, CUDA) == tk.tile_config(768)
    monkeypatch.setattr(tk, "small_batch_tiles", True)
    assert tk.partner_tiles(96, 1, 1024, CUDA) == tk.tile_config(96), "a width with no entry"
    assert tk.small_tiles(768, 1) is tk.SMALL_TILES[768][1] and tk.small_tiles(96, 1) is None
    monkeypatch.setitem(tk.SMALL_TILES, 512, {4: tk.SMALL_BASE_TILES})
    assert tk.small_tiles(512, 2) is None and tk.partner_tiles(512, 2, 1024, CUDA) == tk.tile_config(512), \
        "no entry at or below the batch: the row kernel's own tiling"


def test_column_ranges_and_norm_rows_fill_the_gpu(tk) -> None:
    # batch 1, 1,024 tokens: 16 row blocks of 64; one range per column tile (16 tiles), capped at 16
    assert tk.column_splits(16, 16, CUDA, split_tiles=1) == 16
    assert tk.column_splits(16, 16, CUDA) == 8, "two column tiles per range by default"
    assert tk.column_splits(300, 16, CUDA) == 1, "enough row blocks: no split"
    assert tk.column_splits(16, 16, torch.device("cpu")) == 1
    assert tk.norm_tiling(1024, 768, CUDA) == (4, 1024), "batch 1: 256 programs of 4 rows"
    assert tk.norm_tiling(32 * 1025, 192, CUDA) == (64, 64), "batch 32: 64 rows per program"
    assert tk.norm_tiling(1024, 768, torch.device("cpu")) == (64, 64)
    for r in (1, 100, 5000, 40000):
        rows, feats = tk.norm_tiling(r, 384, CUDA)
        assert 4 <= rows <= 64 and rows * feats <= 4096, (r, rows, feats)
        assert -(-r // rows) >= min(2 * 132, -(-r // 4)), f"{r} rows: programs for the GPU where rows allow"


def test_fold_limit(tk) -> None:
    parts = tk.FOLD_PARTS
    best = torch.zeros(parts + 1, 2, 5, dtype=torch.long)
    score = torch.zeros(parts + 1, 2, 5)
    kept = tk._fold(best[:parts], score[:parts], best[0].clone(), score[0].clone(), combine=False)
    assert kept[0].shape == (parts, 2, 5), "up to FOLD_PARTS partials go to the mutual plan"
    one = tk._fold(best[:1].squeeze(0), score[:1].squeeze(0), best[0], score[0], combine=False)
    assert one[0].shape == (1, 2, 5), "one range: (1, B, S)"


def test_small_tiles_are_the_committed_sweeps_winners(tk) -> None:
    """:data:`tk.SMALL_TILES` is the table ``merge_kernels.py --sweep --sweep-set small --rows`` derives from
    the committed H200 sweep (``results/reference/h200/small/tiles.json`` -> ``small_tiles.json``)."""
    from pathlib import Path

    table = Path(__file__).resolve().parents[2] / "results" / "reference" / "h200" / "small" / "small_tiles.json"
    assert tk.load_tiles(table, per_batch=True) == tk.SMALL_TILES


def test_one_launch_plan_takes_the_small_searches(tk, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside graph capture the plan is one launch at batch 1 (every size) and for Seg-T/S at batch 32; Seg-B/L at
    batch 32 keep the kernels (NOTES 51); the one launch's column ranges stay within what its last program folds."""
    monkeypatch.setattr(tk, "one_launch_plan", "eager")
    for width, slots in ((192, 1024), (384, 1024), (768, 1024), (1024, 1600)):
        x = torch.empty(0, width)  # the rule reads the feature width (CPU: no capture to ask about)
        assert tk.plans_in_one_launch(x, 1, slots), f"batch 1, C={width}"
        assert tk.plans_in_one_launch(x, 32, slots) == (width <= 384), f"batch 32, C={width}"
        cfg, splits = tk.one_launch_tiles(width, 1, slots, CUDA)
        assert not cfg.norms and not cfg.symmetric and 1 <= splits <= tk.FOLD_PARTS, f"one-launch tiling, C={width}"
    monkeypatch.setattr(tk, "one_launch_plan", "never")
    assert not tk.plans_in_one_launch(torch.empty(0, 192), 1, 1024)
    monkeypatch.setattr(tk, "one_launch_plan", "always")
    assert tk.plans_in_one_launch(torch.empty(0, 1024), 32, 1600)
