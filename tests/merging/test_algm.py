"""ALGM (local 2x2 window merging, then adaptive global bipartite merging) against plain loops."""

from __future__ import annotations

import statistics

import pytest
import torch
from mpm_testing import groups_to_output

from mpm.errors import ConfigError
from mpm.merging import build_method, unmerge
from mpm.merging.algm import (
    ALGM,
    ALGM_LOCAL_THRESHOLDS,
    global_adaptive_matching,
    local_window_matching,
    window_similarity,
    window_index,
)
from mpm.merging.base import MergeContext
from mpm.merging.maps import merge_sizes
from mpm.merging.tome import merge_wavg
from mpm.models.encoder import TokenState, merge_step

# --------------------------------------------------------------------------- #
# reference: one image, python loops
# --------------------------------------------------------------------------- #


def _cos(u: torch.Tensor, v: torch.Tensor) -> float:
    return float((u * v).sum() / (u.norm() * v.norm()))


def ref_windows(grid):
    h, w = grid
    return [[2 * i * w + 2 * j, 2 * i * w + 2 * j + 1, (2 * i + 1) * w + 2 * j, (2 * i + 1) * w + 2 * j + 1]
            for i in range(h // 2) for j in range(w // 2)]


def ref_window_sims(metric, grid):
    sims = []
    for win in ref_windows(grid):
        pairs = [_cos(metric[p], metric[q]) for p in win for q in win if p != q]
        sims.append(sum(pairs) / len(pairs))
    return sims


def ref_local(x, size, metric, grid, threshold, count=None):
    """Merged windows (most similar first), then the other tokens in raster order."""
    wins = ref_windows(grid)
    sims = ref_window_sims(metric, grid)
    if count is None:
        count = sum(s >= threshold for s in sims)
    chosen = sorted(range(len(wins)), key=lambda k: (-sims[k], k))[:count]
    taken = {t for k in chosen for t in wins[k]}
    groups = [list(wins[k]) for k in chosen] + [[t] for t in range(x.shape[0]) if t not in taken]
    return groups_to_output(groups, x, size)


def ref_bipartite(metric):
    n = metric.shape[0]
    a_set, b_set = list(range(0, n, 2)), list(range(1, n, 2))
    best = {}
    for a in a_set:
        sims = [_cos(metric[a], metric[b]) for b in b_set]
        j = max(range(len(b_set)), key=lambda j: (sims[j], -j))
        best[a] = (sims[j], b_set[j])
    return a_set, b_set, best


def ref_global(x, size, metric, layer, threshold=None, r=None):
    """ALGM's global step: bipartite matching, r = #A tokens with best sim >= mean + std / layer."""
    n = x.shape[0]
    a_set, b_set, best = ref_bipartite(metric)
    scores = [best[a][0] for a in a_set]
    if r is None and threshold is None and len(scores) < 2:
        r = 0  # no standard deviation: nothing merges
    elif r is None:
        thr = threshold if threshold is not None else statistics.mean(scores) + statistics.stdev(scores) / layer
        r = sum(s >= thr for s in scores)
    r = min(r, n // 2)
    merged = set(sorted(a_set, key=lambda a: (-best[a][0], a))[:r])
    groups = [[a] for a in a_set if a not in merged] + [[b] for b in b_set]
    slot_of = {g[0]: s for s, g in enumerate(groups)}
    for a in sorted(merged):
        groups[slot_of[best[a][1]]].append(a)
    return groups_to_output(groups, x, size)


def _images(b, grid, c=8, seed=0, similar=None, dtype=torch.float64):
    """Random tokens; ``similar[b]`` windows of image b made nearly uniform (so they merge)."""
    g = torch.Generator().manual_seed(seed)
    n = grid[0] * grid[1]
    x = torch.randn(b, n, c, generator=g, dtype=dtype)
    wins = ref_windows(grid)
    for i in range(b):
        k = len(wins) if similar is None else min(similar[i], len(wins))
        for w in torch.randperm(len(wins), generator=g)[:k].tolist():
            base = torch.randn(c, generator=g, dtype=dtype)
            for t in wins[w]:
                x[i, t] = base + 0.05 * torch.randn(c, generator=g, dtype=dtype)
    return x


# --------------------------------------------------------------------------- #
# local merging
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("grid", [(2, 2), (4, 4), (3, 5), (6, 4), (1, 7), (5, 2), (8, 8)])
def test_window_similarity_matches_reference(grid):
    x = _images(2, grid, seed=grid[0] * 10 + grid[1], similar=[1, 2])
    wins = window_index(grid)
    assert wins.tolist() == ref_windows(grid)
    if wins.shape[0]:
        sim = window_similarity(x, wins)
        for b in range(2):
            torch.testing.assert_close(sim[b], torch.tensor(ref_window_sims(x[b], grid), dtype=x.dtype))


@pytest.mark.parametrize("grid", [(2, 2), (4, 4), (3, 5), (6, 4), (1, 7), (8, 8), (7, 9)])
@pytest.mark.parametrize("threshold", [-1.0, 0.5, 0.9, 1.01])
def test_local_matches_reference(grid, threshold):
    n = grid[0] * grid[1]
    x = _images(3, grid, seed=n, similar=[0, 2, 5])
    size = torch.ones(3, n, dtype=x.dtype)
    m = local_window_matching(x, grid, threshold)
    merged, new_size = merge_wavg(m.merge, x, size)
    counts = []
    for b in range(3):
        rx, rsize, ridx = ref_local(x[b], size[b], x[b], grid, threshold)
        counts.append(rx.shape[0])
        assert torch.equal(m.index[b], ridx)
        torch.testing.assert_close(merged[b, : rx.shape[0]], rx)
        torch.testing.assert_close(new_size[b, : rx.shape[0]], rsize)
        assert (new_size[b, rx.shape[0]:] == 0).all()
    counts = torch.tensor(counts)
    assert merged.shape[1] == int(counts.max())
    if bool((counts == counts.max()).all()):
        assert m.lengths is None
    else:
        assert torch.equal(m.lengths, counts)
    torch.testing.assert_close(new_size.sum(1), torch.full((3,), float(n), dtype=x.dtype))
    # merged windows have size 4, unmerged tokens size 1
    assert set(new_size[new_size > 0].tolist()) <= {1.0, 4.0}


def test_local_thresholds_between_observed_similarities():
    grid = (6, 6)
    x = _images(2, grid, seed=7, similar=[3, 6])
    sims = sorted(ref_window_sims(x[0], grid), reverse=True)
    for k in range(len(sims) - 1):
        thr = (sims[k] + sims[k + 1]) / 2
        m = local_window_matching(x, grid, thr)
        out_len = m.lengths[0] if m.lengths is not None else m.index.max() + 1
        assert int(out_len) == 36 - 3 * (k + 1)
        _, _, ridx = ref_local(x[1], torch.ones(36, dtype=x.dtype), x[1], grid, thr)
        assert torch.equal(m.index[1], ridx)


def test_local_batch_min_equal_counts_most_similar():
    grid = (6, 8)
    x = _images(3, grid, seed=3, similar=[4, 1, 7])
    size = torch.ones(3, 48, dtype=x.dtype)
    exact = local_window_matching(x, grid, 0.9)
    bmin = local_window_matching(x, grid, 0.9, policy="batch-min")
    assert exact.lengths is not None and torch.equal(exact.lengths, torch.tensor([36, 45, 27]))
    assert bmin.lengths is None and bmin.index.max() == 44
    merged, _ = merge_wavg(bmin.merge, x, size)
    for b in range(3):
        rx, _, ridx = ref_local(x[b], size[b], x[b], grid, 0.9, count=1)
        assert torch.equal(bmin.index[b], ridx)
        torch.testing.assert_close(merged[b], rx)


# --------------------------------------------------------------------------- #
# global merging
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("n", [2, 3, 6, 17, 40, 64])
@pytest.mark.parametrize("layer", [1, 5])
def test_global_matches_reference(n, layer):
    g = torch.Generator().manual_seed(n + layer)
    x = torch.randn(3, n, 6, generator=g, dtype=torch.float64)
    size = torch.randint(1, 5, (3, n), generator=g).double()
    m = global_adaptive_matching(x, layer)
    merged, new_size = merge_wavg(m.merge, x, size)
    counts = []
    for b in range(3):
        rx, rsize, ridx = ref_global(x[b], size[b], x[b], layer)
        counts.append(rx.shape[0])
        assert torch.equal(m.index[b], ridx)
        torch.testing.assert_close(merged[b, : rx.shape[0]], rx)
        torch.testing.assert_close(new_size[b, : rx.shape[0]], rsize)
    assert merged.shape[1] == max(counts)
    torch.testing.assert_close(new_size.sum(1), size.sum(1))


def test_global_fixed_threshold_and_batch_min():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 30, 3, generator=g, dtype=torch.float64)
    size = torch.ones(4, 30, dtype=x.dtype)
    m = global_adaptive_matching(x, 5, threshold=0.8)
    r = []
    for b in range(4):
        rx, _, ridx = ref_global(x[b], size[b], x[b], 5, threshold=0.8)
        assert torch.equal(m.index[b], ridx)
        r.append(30 - rx.shape[0])
    bmin = global_adaptive_matching(x, 5, threshold=0.8, policy="batch-min")
    assert bmin.lengths is None and int(bmin.index.max()) == 30 - min(r) - 1
    for b in range(4):
        _, _, ridx = ref_global(x[b], size[b], x[b], 5, r=min(r))
        assert torch.equal(bmin.index[b], ridx)
    # a threshold everything passes: clamped to half
    assert int(global_adaptive_matching(x, 5, threshold=-2.0).index.max()) == 14


# --------------------------------------------------------------------------- #
# the method: local then global, through the runner's merge step
# --------------------------------------------------------------------------- #


def run_steps(method, x, grid):
    """Drive ``method`` through every scheduled block with the runner's bookkeeping."""
    state = TokenState.initial(x.shape[0], grid, x.device, x.dtype)
    for block in method.schedule:
        x = merge_step(x, state, method, block, num_prefix=0, metric=None)
    return x, state


def test_method_defaults_and_published_settings():
    m = build_method("algm")
    assert isinstance(m, ALGM) and m.schedule == (0, 4) and m.site == "after_attention"
    assert m.local_threshold == 0.88 and m.global_threshold is None and m.window == (2, 2)
    assert not m.proportional_attention
    assert m.describe()["local_threshold"] == 0.88
    t = ALGM.published("T")
    assert t.schedule == (0, 4) and t.local_threshold == ALGM_LOCAL_THRESHOLDS[("ade20k", "T")] == 0.90
    assert ALGM.published("L").schedule == (0, 6)
    assert build_method("algm", (2, 7), local_threshold=0.7).schedule == (2, 7)
    with pytest.raises(ConfigError):
        ALGM.published("T", "cityscapes")
    with pytest.raises(ConfigError):
        build_method("algm", (0, 4), window=(1, 1))
    with pytest.raises(ConfigError):
        build_method("algm", (0, 4), metric="values")


@pytest.mark.parametrize("grid", [(8, 8), (6, 10), (7, 5)])
def test_method_matches_step_by_step_reference(grid):
    n = grid[0] * grid[1]
    x = _images(3, grid, seed=n, similar=[2, 9, 0])
    method = ALGM((0, 4), local_threshold=0.9)
    out, state = run_steps(method, x, grid)
    size0 = torch.ones(n, dtype=x.dtype)
    for b in range(3):
        lx, lsize, lidx = ref_local(x[b], size0, x[b], grid, 0.9)
        gx, gsize, gidx = ref_global(lx, lsize, lx, layer=5)
        m_b = gx.shape[0]
        assert int(state.tokens_left[-1][b]) == m_b
        assert torch.equal(state.index[b], gidx[lidx])
        torch.testing.assert_close(out[b, :m_b], gx)
        torch.testing.assert_close(state.size[b, :m_b], gsize)
        # unmerge with the composed map == following each patch through both reference maps
        full = unmerge(out, state.index)[b]
        for i in range(n):
            assert torch.equal(full[i], out[b, gidx[lidx[i]]])
    torch.testing.assert_close(state.size.sum(1), torch.full((3,), float(n), dtype=x.dtype))


def test_exact_batch_equals_each_image_alone():
    grid = (8, 8)
    x = _images(4, grid, seed=1, similar=[12, 0, 5, 16])
    method = ALGM((0, 4), local_threshold=0.9)
    out, state = run_steps(method, x, grid)
    assert state.lengths is not None and len(set(state.lengths.tolist())) > 1
    for b in range(4):
        alone, st = run_steps(method, x[b:b + 1], grid)
        m_b = alone.shape[1]
        assert int(state.lengths[b]) == m_b
        assert torch.equal(state.index[b], st.index[0])
        torch.testing.assert_close(out[b, :m_b], alone[0])
        torch.testing.assert_close(state.size[b, :m_b], st.size[0])
        assert (state.size[b, m_b:] == 0).all()
        assert [int(t[b]) for t in state.tokens_left] == [int(t[0]) for t in st.tokens_left]


def test_batch_min_equal_counts():
    grid = (8, 8)
    x = _images(3, grid, seed=2, similar=[12, 3, 8])
    method = ALGM((0, 4), batch_policy="batch-min", local_threshold=0.9)
    out, state = run_steps(method, x, grid)
    assert state.lengths is None
    assert all(len(set(t.tolist())) == 1 for t in state.tokens_left)
    assert int(state.tokens_left[0][0]) == 64 - 3 * 3  # the image with the fewest similar windows
    torch.testing.assert_close(state.size.sum(1), torch.full((3,), 64.0, dtype=x.dtype))
    torch.testing.assert_close(merge_sizes(torch.ones(3, 64, dtype=x.dtype), state.index, out.shape[1]), state.size)


def test_local_step_must_come_first():
    grid = (4, 4)
    x = _images(2, grid)
    method = ALGM((0, 4))
    size = torch.ones(2, 16, dtype=x.dtype)
    with pytest.raises(ConfigError, match="full 4x4"):
        method.merge(x[:, :12], MergeContext(0, None, size[:, :12], None, grid))
    with pytest.raises(ConfigError, match="full"):
        method.merge(x, MergeContext(0, torch.tensor([16, 12]), size, None, grid))
    shuffled = torch.arange(16).flip(0).expand(2, 16)
    with pytest.raises(ConfigError, match="full"):
        method.merge(x, MergeContext(0, None, size, None, grid, index=shuffled))
    # the global step accepts any (padded) layout
    res = method.merge(x, MergeContext(4, torch.tensor([16, 12]), size, None, grid))
    assert res.index.shape == (2, 16)


def test_keys_metric_option_uses_context_metric():
    grid = (4, 4)
    x = _images(1, grid, similar=[4])
    keys = torch.randn(1, 16, 5, dtype=x.dtype)
    ctx = MergeContext(0, None, torch.ones(1, 16, dtype=x.dtype), keys, grid)
    by_keys = ALGM((0, 4), local_threshold=0.9, metric="keys").merge(x, ctx)
    by_tokens = ALGM((0, 4), local_threshold=0.9).merge(x, ctx)
    assert by_tokens.x.shape[1] == 4  # all 4 windows of x are uniform
    _, _, ridx = ref_local(x[0], torch.ones(16, dtype=x.dtype), keys[0], grid, 0.9)
    assert torch.equal(by_keys.index[0], ridx)


# --------------------------------------------------------------------------- #
# end to end: Segmenter
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def images():
    """Two images with flat regions of different extent (their windows merge), noise elsewhere."""
    g = torch.Generator().manual_seed(1)
    im = torch.randn(3, 3, 128, 128, generator=g)
    im[0, :, :64] = 0.3
    im[1, :, :, :32] = -0.5
    return im


@torch.no_grad()
def test_segmenter_algm_exact(seg, images):
    method = build_method("algm")
    logits, enc = seg(images, method=method, backend="math", return_encoder=True)
    logits_sdpa = seg(images, method=method, backend="sdpa")
    assert logits.shape == (3, 5, 128, 128) and enc.tokens.shape == (3, 64, 192)
    local = enc.tokens_left[0].tolist()
    assert len(set(local)) == 3 and min(local) < 64  # per-image counts: padded layout exercised
    torch.testing.assert_close(logits, logits_sdpa, rtol=0, atol=1e-4)
    for b in range(3):
        alone, enc_b = seg(images[b:b + 1], method=method, backend="math", return_encoder=True)
        torch.testing.assert_close(logits[b:b + 1], alone, rtol=0, atol=1e-4)
        assert [int(t[b]) for t in enc.tokens_left] == [int(t[0]) for t in enc_b.tokens_left]


@torch.no_grad()
def test_segmenter_algm_batch_min_and_prop_attn(seg, images):
    method = build_method("algm", (0, 4), batch_policy="batch-min")
    logits, enc = seg(images, method=method, backend="math", return_encoder=True)
    assert all(len(set(t.tolist())) == 1 for t in enc.tokens_left)
    torch.testing.assert_close(logits, seg(images, method=method, backend="sdpa"), rtol=0, atol=1e-4)
    prop = build_method("algm", (0, 4), local_threshold=0.5, prop_attn=True)
    a = seg(images, method=prop, backend="math")
    torch.testing.assert_close(a, seg(images, method=prop, backend="sdpa"), rtol=0, atol=1e-4)
    with pytest.raises(ConfigError):
        seg(images, method=build_method("algm", (0, 12)), backend="math")
