"""MPM's fast path (plan on the device, apply into a row buffer) against the plain reference functions."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mpm.merging.maps import gather_mean, row_sources, rows_to_padded
from mpm.merging.mpm import best_partners, merge_pairs, mutual_pairs, plan_from_partners, plan_rows

P = 1  # prefix (class) tokens


def _rows(lengths: list[int], c: int, seed: int, packed: bool, slots: int | None = None):
    """Random rows of images with ``lengths`` image tokens: x (R, C), start (B,), and the padded (B, S, C) view."""
    g = torch.Generator().manual_seed(seed)
    n = torch.tensor(lengths)
    s = slots or max(lengths)
    if packed:
        lens = n + P
        start = lens.cumsum(0) - lens
        x = torch.randn(int(lens.sum()) + 3, c, generator=g, dtype=torch.float64)
    else:
        start = torch.arange(len(lengths)) * (s + P)
        x = torch.randn(len(lengths) * (s + P), c, generator=g, dtype=torch.float64)
    return x, start, n, rows_to_padded(x, start + P, s)


@pytest.mark.parametrize("packed", [False, True])
def test_plan_matches_merge_pairs(packed: bool) -> None:
    x, start, n, feats = _rows([60, 33, 2, 47], 16, 0, packed)
    plan = plan_rows(x, start, n, P, feats.shape[1])
    best, score = best_partners(feats, n)
    ref = merge_pairs(feats, best, mutual_pairs(best, score, n), n)
    assert plan.kept.tolist() == ref.lengths.tolist()
    for b, nb in enumerate(n.tolist()):
        assert torch.equal(plan.dest[b, :nb], ref.index[b, :nb])
    # the padded view and the gather of the rows give the same plan
    again = plan_rows(x, start, n, P, feats.shape[1], view=feats)
    assert all(torch.equal(a, b) for a, b in zip(again, plan))


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("extra", [0, 5])
def test_apply_matches_merge_pairs(packed: bool, extra: int) -> None:
    """Gathered rows are MPM's merged tokens, bit for bit; prefix rows copied; pad rows finite copies."""
    x, start, n, feats = _rows([50, 21, 38], 8, 1, packed=False)
    best, score = best_partners(feats, n)
    plan = plan_from_partners(best, score, n)
    ref = merge_pairs(feats, best, mutual_pairs(best, score, n), n)
    lens = (plan.kept + P).tolist()
    slots = max(lens) + extra
    rows = sum(lens) + 1 + extra if packed else len(lens) * slots
    src = row_sources(plan.dest, plan.partner, plan.survivor, n, start, plan.kept, P, packed, slots, rows)
    out = gather_mean(x, src.src1, src.src2)
    assert out.shape == (rows, 8) and torch.isfinite(out).all()
    assert src.length.tolist() == lens
    for b, m in enumerate(plan.kept.tolist()):
        s0 = int(src.start[b])
        assert torch.equal(out[s0:s0 + P], x[int(start[b]):int(start[b]) + P])  # prefix rows
        assert torch.equal(out[s0 + P:s0 + P + m], ref.x[b, :m])  # merged tokens, bit for bit
    if packed:
        assert src.start.tolist() == [sum(lens[:b]) for b in range(len(lens))]
        assert src.cu_seqlens.tolist() == [0, lens[0], lens[0] + lens[1], sum(lens), rows]
        assert src.cu_seqlens.dtype == torch.int32
    else:
        assert src.cu_seqlens is None and src.start.tolist() == [b * slots for b in range(len(lens))]
    # one source per row (the oracle's slice): plain copies
    single = row_sources(plan.dest, None, plan.survivor, n, start, plan.kept, P, packed, slots, rows)
    assert single.src2 is None and torch.equal(gather_mean(x, single.src1, None), x[single.src1])


@pytest.mark.parametrize("packed", [False, True])
def test_counts_over_capacity_stay_in_bounds(packed: bool) -> None:
    """A capacity guessed too small (speculation) cuts images instead of writing past the buffer."""
    x, start, n, feats = _rows([50, 21, 38], 8, 3, packed=False)
    best, score = best_partners(feats, n)
    plan = plan_from_partners(best, score, n)
    lens = (plan.kept + P).tolist()
    slots = max(lens) - 4 if not packed else max(lens) + 5
    rows = sum(lens) - 6 if packed else len(lens) * slots
    src = row_sources(plan.dest, plan.partner, plan.survivor, n, start, plan.kept, P, packed, slots, rows)
    assert src.src1.shape == (rows,) and bool(((src.src1 >= 0) & (src.src1 < x.shape[0])).all())
    if packed:
        assert (src.start + src.length).max() <= rows - 1 and src.cu_seqlens[-1] == rows
        assert src.cu_seqlens.diff().min() >= 0
    else:
        assert (src.length <= slots).all() and src.length.tolist() != lens


def test_uniform_input_needs_no_lengths() -> None:
    x, start, n, feats = _rows([40, 40], 12, 2, packed=False)
    a = plan_rows(x, start, None, P, 40, view=feats)
    b = plan_rows(x, start, n, P, 40, view=feats)
    assert all(torch.equal(u, v) for u, v in zip(a, b))


_INTERPRETER_CHECK = textwrap.dedent('''
    import os
    os.environ["TRITON_INTERPRET"] = "1"
    import torch
    from mpm.merging import triton_kernels as tk
    from mpm.merging.maps import row_sources, rows_to_padded
    from mpm.merging.mpm import best_partners, plan_from_partners
    torch.manual_seed(0)
    P = 1
    n = torch.tensor([37, 2, 20])
    lens = n + P
    start = lens.cumsum(0) - lens
    x = torch.randn(int(lens.sum()) + 4, 32)
    s = 37
    best, score = tk.best_partners_rows(x, start, n, P, s)
    ref_best, ref_score = best_partners(rows_to_padded(x, start + P, s), n)
    ref = plan_from_partners(ref_best, ref_score, n)
    plan = tk.mutual_plan(best, score, n)
    j = torch.arange(s)
    past = j[None, :] >= n[:, None]
    assert torch.equal(best[past], j.expand(len(n), s)[past]) and bool(torch.isneginf(score[past]).all()), "past n"
    twin = plan_from_partners(best, score, n)  # the PyTorch plan reads the kernel's slots past n too
    assert torch.equal(twin.kept, plan[3]), "plan from the kernel's partners"
    for b, nb in enumerate(n.tolist()):
        assert torch.equal(best[b, :nb], ref_best[b, :nb]), "best partners"
        assert torch.equal(plan[0][b, :nb], ref.dest[b, :nb]) and torch.equal(plan[1][b, :nb], ref.partner[b, :nb])
    assert torch.equal(plan[3], ref.kept)
    for packed in (True, False):
        slots = int((ref.kept + P).max()) + 2
        rows = int((ref.kept + P).sum()) + 3 if packed else 3 * slots
        tk.enabled = False
        a = row_sources(ref.dest, ref.partner, ref.survivor, n, start, ref.kept, P, packed, slots, rows)
        tk.enabled = True
        t = tk.gather_sources(plan[0], plan[1], plan[2], n, start, plan[3], P, packed, slots, rows)
        assert all(torch.equal(u, v) for u, v in zip(a, t) if u is not None), "sources"
        assert torch.equal(tk.gather_mean(x, t[0], t[1]), (x[a.src1] + x[a.src2]) * 0.5), "gather mean"
    # column ranges split over programs (batch 1 on a GPU), then combined: the same partners
    n2 = torch.tensor([200, 2, 130])
    lens2 = n2 + P
    start2 = lens2.cumsum(0) - lens2
    x2 = torch.randn(int(lens2.sum()) + 4, 32)
    one = tk.best_partners_rows(x2, start2, n2, P, 200, splits=1)
    for splits in (2, 3):
        split = tk.best_partners_rows(x2, start2, n2, P, 200, splits=splits)
        assert torch.equal(split[0], one[0]) and torch.equal(split[1], one[1]), f"{splits} column ranges"
    ref_best, _ = best_partners(rows_to_padded(x2, start2 + P, 200), n2)
    for b, nb in enumerate(n2.tolist()):
        assert torch.equal(one[0][b, :nb], ref_best[b, :nb]), "best partners, 4 column tiles"
    # other tilings, and inverse norms from the pre-pass: the same partners, scores within rounding
    for tiles in (tk.TileConfig(128, 64, 32, 8, 2, norms=True), tk.TileConfig(32, 128, 16, 4, 3, norms=False)):
        got = tk.best_partners_rows(x2, start2, n2, P, 200, tiles=tiles)
        assert torch.equal(got[0], one[0]), f"best partners, tiling {tiles.label()}"
        assert torch.allclose(got[1], one[1], rtol=1e-6, atol=1e-6), f"scores, tiling {tiles.label()}"
    for tiling in (None, (4, 1024), (8, 16), (64, 64)):  # rows and features per program (small batches: few rows)
        got = tk.inv_norms(x2, tiling)
        assert torch.allclose(got * x2.norm(dim=-1), torch.ones(len(x2)), atol=1e-6), f"inverse norms {tiling}"
    # the mutual plan folding the column ranges' partial maxima itself: the plan of the folded partners
    plan2 = tk.mutual_plan(*one, n2)
    for splits in (1, 3):
        parts = tk.best_partners_rows(x2, start2, n2, P, 200, splits=splits, combine=False)
        assert parts[0].shape == (splits, 3, 200), "partials (K, B, S)"
        folded = tk.mutual_plan(*parts, n2)
        for b, nb in enumerate(n2.tolist()):
            assert all(torch.equal(u[b, :nb], v[b, :nb]) for u, v in zip(folded[:3], plan2[:3])), f"folded {splits}"
        assert torch.equal(folded[3], plan2[3]), f"kept, folded {splits}"
    sym_parts = tk.best_partners_rows(x2, start2, n2, P, 200, tiles=tk.TileConfig(64, 64, 16, 4, 2, True, True),
                                      combine=False)
    assert sym_parts[0].shape[0] == 4 and torch.equal(tk.mutual_plan(*sym_parts, n2)[3], plan2[3]), "symmetric partials"
    many = tk.best_partners_rows(x2, start2, n2, P, 200, splits=tk.FOLD_PARTS + 1, combine=False)
    assert many[0].shape[0] == 1 and torch.equal(many[0][0], one[0]), "more partials than the plan folds: combined first"
    # a tie across column ranges: token 0's two best partners (1 and 3) in different ranges, the
    # earlier range keeps it (first index), then 0 and 1 choose each other
    tb = torch.tensor([[[1, 0, 3, 2]], [[3, 3, 1, 0]]])
    ts = torch.tensor([[[0.5, 0.9, 0.2, 0.7]], [[0.5, 0.1, 0.2, 0.7]]])
    tie = tk.mutual_plan(tb, ts, torch.tensor([4]))
    assert tie[1][0].tolist() == [1, 0, 3, 2] and int(tie[3][0]) == 2, "ties across ranges: the earlier range"
    for packed in (True, False):  # counts over the capacity
        slots = int((ref.kept + P).max()) + 2
        for r_cut, s_cut in ((int((ref.kept + P).sum()) - 5, slots - 3),):
            cut = r_cut if packed else 3 * s_cut
            tk.enabled = False
            a = row_sources(ref.dest, ref.partner, ref.survivor, n, start, ref.kept, P, packed, s_cut, cut)
            tk.enabled = True
            t = tk.gather_sources(plan[0], plan[1], plan[2], n, start, plan[3], P, packed, s_cut, cut)
            assert all(torch.equal(u, v) for u, v in zip(a, t) if u is not None), "sources over capacity"
    # the symmetric kernel (each pair of token blocks once; rows and columns of a tile both read):
    # the row kernel's partners on random rows, the reference's first index on exact ties
    for tiles in (tk.TileConfig(64, 64, 16, 4, 2, True, True), tk.TileConfig(32, 32, 32, 4, 2, True, True)):
        got = tk.best_partners_rows(x2, start2, n2, P, 200, tiles=tiles)
        assert torch.equal(got[0], one[0]), f"best partners, {tiles.label()}"
        fin = torch.isfinite(one[1])
        assert torch.equal(fin, torch.isfinite(got[1])), f"tokens alone, {tiles.label()}"
        assert torch.allclose(got[1][fin], one[1][fin], rtol=1e-6, atol=1e-6), f"scores, {tiles.label()}"
    n3 = torch.tensor([150, 3, 97, 1])
    lens3 = n3 + P
    start3 = lens3.cumsum(0) - lens3
    protos = torch.randint(-2, 3, (7, 32)).float()  # 7 distinct rows repeated: exact ties everywhere
    x3 = protos[torch.randint(0, 7, (int(lens3.sum()) + 4,))]
    ref3 = best_partners(rows_to_padded(x3, start3 + P, 150), n3)[0]
    for tiles in (tk.TileConfig(64, 64, 16, 4, 2, True, True), tk.TileConfig(32, 32, 32, 4, 2, True, True), None):
        got = tk.best_partners_rows(x3, start3, n3, P, 150, tiles=tiles)[0]
        for b, nb in enumerate(n3.tolist()):
            assert torch.equal(got[b, :nb], ref3[b, :nb]), f"ties: first index, {tiles and tiles.label()}"
    # the map after the merge composed in the sources' launch (clamped to the output lengths or not), and the
    # image tokens given as None (S each: a uniform input), against their twins
    index = torch.randint(0, s, (3, 150))  # more grid tokens than the kernel's block: several steps
    for packed in (True, False):
        slots = int((ref.kept + P).max()) - 2  # some counts over the capacity: the clamp matters
        rows = int((ref.kept + P).sum()) - 4 if packed else 3 * slots
        for counts in (n, None):
            for clamp in (False, True):
                tk.enabled = False
                want = row_sources(ref.dest, ref.partner, ref.survivor, counts, start, ref.kept, P, packed, slots,
                                   rows, index=index, clamp_index=clamp)
                tk.enabled = True
                got = row_sources(ref.dest, ref.partner, ref.survivor, counts, start, ref.kept, P, packed, slots,
                                  rows, index=index, clamp_index=clamp)
                assert all(torch.equal(u, v) for u, v in zip(got, want) if u is not None), \
                    f"sources + composed map (packed {packed}, counts {counts is not None}, clamp {clamp})"
                cut = (got.length - P - 1).clamp(min=0)[:, None]
                assert got.index is not None and (not clamp or bool((got.index <= cut).all())), "map inside the lengths"
    from mpm.merging.maps import compose_rows_index, unmerge_rows
    assert torch.equal(compose_rows_index(ref.dest, index), ref.dest.gather(1, index)), "compose: the plain map"
    rows = x.shape[0]
    grid = torch.randint(0, 45, (3, 50))  # some rows past the buffer: the clamp keeps them inside
    for prefix in (0, P, 2):
        for clamp in (False, True):
            idx = grid if clamp else grid.clamp(max=rows - 1 - int(start.max()) - prefix)
            tk.enabled = False
            want = unmerge_rows(x, start, idx, prefix, clamp)
            tk.enabled = True
            got = tk.unmerge_rows(x, start, idx, prefix, clamp)
            assert all(torch.equal(u, v) for u, v in zip(got, want)), f"unmerge rows (P={prefix}, clamp={clamp})"
    # the plan in one launch (norms in place, each image's last program folds the ranges and plans):
    # the multi-kernel plan's decision, for 1 to FOLD_PARTS column ranges; the tickets are left zero
    for splits in (1, 2, tk.FOLD_PARTS):
        for tiles in (tk.TileConfig(32, 64, 16, 4, 2), tk.TileConfig(64, 32, 32, 4, 2)):
            got = tk.plan_one_launch(x2, start2, n2, P, 200, tiles=(tiles, splits), return_partials=True)
            assert got[4].shape == (splits, 3, 200), "one launch: partials (K, B, S)"
            for b, nb in enumerate(n2.tolist()):
                assert all(torch.equal(u[b, :nb], v[b, :nb]) for u, v in zip(got[:3], plan2[:3])), f"one launch {splits}"
            assert torch.equal(got[3], plan2[3]), f"one launch kept, {splits} ranges"
            assert not bool(tk._tickets(x2.device).any()), "tickets reset"
    xu = torch.randn(3 * (60 + P), 32)  # a uniform padded batch: no counts tensor
    su = torch.arange(3) * (60 + P)
    full = torch.full((3,), 60)
    want = tk.mutual_plan(*tk.best_partners_rows(xu, su, full, P, 60), full)
    got = tk.plan_one_launch(xu, su, None, P, 60, tiles=(tk.TileConfig(32, 32, 16, 4, 2), 2))
    assert all(torch.equal(u, v) for u, v in zip(got, want)), "one launch, uniform input"
    assert tk.plans_in_one_launch(x, 3, 37) and tk.one_launch_plan == "eager", "outside capture: one launch"
    assert not tk.plans_in_one_launch(x, 3, int((tk.ONE_LAUNCH_MAX_PRODUCTS / 3 / 32) ** 0.5) + 1), "large: kernels"
    from mpm.merging.mpm import plan_rows
    for fused, launch in ((False, "eager"), (True, "never"), (True, "eager")):  # the fast path's plan, every source
        tk.fused_best_partner, tk.one_launch_plan = fused, launch
        pr = plan_rows(x, start, n, P, s)
        for b, nb in enumerate(n.tolist()):
            assert torch.equal(pr.dest[b, :nb], ref.dest[b, :nb]), f"plan_rows dest (fused={fused}, {launch})"
            assert torch.equal(pr.partner[b, :nb], ref.partner[b, :nb]), f"plan_rows partner (fused={fused}, {launch})"
        assert torch.equal(pr.kept, ref.kept), f"plan_rows kept (fused={fused}, {launch})"
    tk.one_launch_plan = "sometimes"
    try:
        tk.plans_in_one_launch(x, 3, 37)
        raise AssertionError("an unknown one-launch mode passed")
    except ValueError as err:
        assert "MPM_TRITON_ONE_LAUNCH" in str(err)
    print("triton kernels ok")
''')


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_triton_kernels_match_pytorch_twins_in_the_interpreter() -> None:
    """The CUDA kernels' logic, run on the CPU by Triton's interpreter (benchmarks/cuda_checks.py runs them on a GPU)."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", _INTERPRETER_CHECK], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "triton kernels ok" in proc.stdout
