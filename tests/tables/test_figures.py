"""Figures: Pareto front, tokens entering each encoder block, files written."""

from __future__ import annotations

import pandas as pd
import pytest

from mpm.tables.figures import (
    MIN_MIOU_SPAN,
    pareto_front,
    save_figure,
    speed_accuracy_figure,
    tokens_entering_blocks,
)
from mpm.tables.paper import Paper, build_paper
from mpm.tables.results import load_results


def test_pareto_front() -> None:
    assert pareto_front([(1, 5), (2, 4), (3, 1), (1.5, 3)]) == [(1, 5), (2, 4), (3, 1)]
    assert pareto_front([(1, 1), (2, 2)]) == [(2, 2)]


def test_tokens_entering_blocks() -> None:
    # MPM merges before blocks 2 and 5: block 2 already sees the merged tokens
    assert tokens_entering_blocks([(2, "before_block", 800), (5, "before_block", 680)], 1024, 8) == \
        [1024, 1024, 800, 800, 800, 680, 680, 680]
    # ToMe / ALGM merge inside a block (after attention): the next block sees the result
    assert tokens_entering_blocks([(0, "after_attention", 990), (1, "after_attention", 956)], 1024, 4) == \
        [1024, 990, 956, 956]
    assert tokens_entering_blocks([], 1024, 3) == [1024, 1024, 1024]


def test_figures_written_for_each_dataset_and_model(make_eval, make_bench, write, tmp_path) -> None:
    evals = [make_eval("none", [], 38.0, 25.3), make_eval("mpm", [2, 5], 37.5, 19.0, tokens=[800, 680]),
             make_eval("mpm", [5], 36.0, 22.0, tokens=[790], limit=10),
             make_eval("tome", list(range(12)), 37.9, 20.0, tokens=[1024 - 34 * (i + 1) for i in range(12)], r=34),
             make_eval("none", [], 60.0, 25.3, dataset="cityscapes")]
    benches = [make_bench("none", [], "math", 100.0), make_bench("mpm", [2, 5], "math", 125.0)]
    written = build_paper(write(evals) + write(benches, "b"), tmp_path / "t", tmp_path / "f", gpu_target="h100")
    names = sorted(f["name"] for f in written["figures"])
    assert names == ["pareto_ade20k_seg_t_mask", "pareto_cityscapes_seg_t_mask",
                     "tokens_ade20k_seg_t_mask", "tokens_cityscapes_seg_t_mask"]
    for name in names:
        for ext in ("png", "pdf"):
            assert (tmp_path / "f" / f"{name}.{ext}").stat().st_size > 5000
    assert (tmp_path / "f" / "pareto_ade20k_seg_t_mask.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pareto_x_is_throughput_when_timed_else_gflops(make_eval, make_bench) -> None:
    res = load_results([])
    res.evals = [make_eval("none", [], 38.0, 25.3), make_eval("mpm", [2, 5], 37.5, 19.0, tokens=[800, 680])]
    paper = Paper(res)
    data, xlabel, _, lower = paper.figure_data(paper.groups[0])
    assert lower and "GFLOPs" in xlabel and list(data["x"]) == [25.3, 19.0]
    res.benches = [make_bench("none", [], "math", 100.0), make_bench("mpm", [2, 5], "math", 125.0)]
    paper = Paper(res, gpu_target="h100")
    data, xlabel, _, lower = paper.figure_data(paper.groups[0])
    assert not lower and xlabel.startswith("images/s (h100: NVIDIA H100") and list(data["x"]) == [100.0, 125.0]


def test_save_figure_is_reproducible(tmp_path) -> None:
    data = pd.DataFrame({"x": [1.0, 2.0], "mIoU": [40.0, 39.0], "label": ["none", "MPM(2,5)"],
                         "method_name": ["none", "mpm"], "partial": [False, True], "extent": ["full", "partial"]})
    a = save_figure(speed_accuracy_figure(data, xlabel="x", title="t"), tmp_path / "a", "p")
    b = save_figure(speed_accuracy_figure(data, xlabel="x", title="t"), tmp_path / "b", "p")
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]


def _points(mious: list[float]) -> pd.DataFrame:
    n = len(mious)
    return pd.DataFrame({"x": [float(i + 1) for i in range(n)], "mIoU": mious, "label": [f"m{i}" for i in range(n)],
                         "method_name": ["mpm"] * n, "partial": [False] * n, "extent": ["full"] * n})


def test_pareto_miou_axis_has_a_minimum_span() -> None:
    """The demo's seven methods lie within 0.35 points: the axis must not blow that up to its full height."""
    import matplotlib.pyplot as plt

    fig = speed_accuracy_figure(_points([95.06, 95.03, 95.05, 95.00, 94.73]), xlabel="x", title="t")
    lo, hi = fig.axes[0].get_ylim()
    plt.close(fig)
    assert MIN_MIOU_SPAN == 2.0 and hi - lo == pytest.approx(2.0)
    assert (lo + hi) / 2 == pytest.approx((94.73 + 95.06) / 2)  # centred on the points
    fig = speed_accuracy_figure(_points([30.0, 40.0]), xlabel="x", title="t")  # a wide spread keeps its own axis
    lo, hi = fig.axes[0].get_ylim()
    plt.close(fig)
    assert lo < 30.0 and hi > 40.0 and hi - lo < 14.0


def test_labels_of_nearby_points_take_different_slots():
    from mpm.tables.figures import _LABEL_SLOTS, label_offsets

    # none and ToMe almost on top of each other (the demo's figure), MPM(2,5,8) and MPM(5) close, one far
    offsets = label_offsets([15.9, 15.6, 20.3, 21.7, 30.6], [95.24, 95.24, 95.22, 95.24, 95.10], min_span_y=2.0)
    assert offsets[0] != offsets[1] and offsets[2] != offsets[3]
    assert offsets[0] == offsets[2] == offsets[4] == _LABEL_SLOTS[0]
    assert label_offsets([1.0, float("nan")], [2.0, 3.0]) == [_LABEL_SLOTS[0], _LABEL_SLOTS[0]]
