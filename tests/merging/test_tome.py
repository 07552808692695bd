"""ToMe (bipartite soft matching) against a plain-loop reference, and through the Segmenter."""

from __future__ import annotations

import pytest
import torch
from mpm_testing import groups_to_output

from mpm.errors import BackendError, ConfigError
from mpm.merging import build_method, compose, identity_map, unmerge
from mpm.merging.base import MergeContext
from mpm.merging.maps import merge_sizes
from mpm.merging.tome import ToMe, bipartite_soft_matching, merge_wavg, tome_merge
from mpm.models.encoder import TokenState, merge_step

# --------------------------------------------------------------------------- #
# reference: one image, python loops
# --------------------------------------------------------------------------- #


def _cos(u: torch.Tensor, v: torch.Tensor) -> float:
    return float((u * v).sum() / (u.norm() * v.norm()))


def ref_tome(x: torch.Tensor, size: torch.Tensor, metric: torch.Tensor, r: int):
    """ToMe on one image (N, C): A = even, B = odd; r best edges; output unmerged A then B."""
    n = x.shape[0]
    a_set, b_set = list(range(0, n, 2)), list(range(1, n, 2))
    r = max(0, min(r, n // 2))
    best = {}
    for a in a_set:
        sims = [_cos(metric[a], metric[b]) for b in b_set]
        j = max(range(len(b_set)), key=lambda j: (sims[j], -j)) if b_set else None
        best[a] = (sims[j], b_set[j]) if b_set else (float("-inf"), None)
    ranked = sorted(a_set, key=lambda a: (-best[a][0], a))
    merged = set(ranked[:r])
    groups = [[a] for a in a_set if a not in merged] + [[b] for b in b_set]
    slot_of = {g[0]: s for s, g in enumerate(groups)}
    for a in sorted(merged):
        groups[slot_of[best[a][1]]].append(a)
    return groups_to_output(groups, x, size)


def _rand(b, n, c=6, d=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, c, generator=g, dtype=dtype)
    metric = torch.randn(b, n, d, generator=g, dtype=dtype)
    size = torch.randint(1, 5, (b, n), generator=g).to(dtype)
    return x, size, metric


# --------------------------------------------------------------------------- #
# pure functions
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 13, 16, 31, 64])
@pytest.mark.parametrize("r", [0, 1, 3, 7, 1000])
def test_matches_reference(n, r):
    x, size, metric = _rand(3, n, seed=n * 31 + r)
    out, new_size = tome_merge(x, size, metric, r, return_size=True)
    assert out.lengths is None
    for b in range(3):
        rx, rsize, ridx = ref_tome(x[b], size[b], metric[b], r)
        assert torch.equal(out.index[b], ridx)
        torch.testing.assert_close(out.x[b], rx, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(new_size[b], rsize)
    # sizes: the runner's bookkeeping agrees and sums to the patch count
    torch.testing.assert_close(merge_sizes(size, out.index, out.x.shape[1]), new_size)
    torch.testing.assert_close(new_size.sum(1), size.sum(1))


@pytest.mark.parametrize("n,r,expect", [(10, 3, 7), (10, 5, 5), (10, 6, 5), (11, 100, 6), (1, 5, 1), (2, 9, 1)])
def test_r_is_clamped_to_half(n, r, expect):
    x, size, metric = _rand(2, n)
    out = tome_merge(x, size, metric, r)
    assert out.x.shape[1] == expect
    assert out.index.max() < expect and out.lengths is None


def test_metric_defaults_to_tokens_and_size_to_ones():
    x, _, _ = _rand(2, 12)
    out = tome_merge(x, None, None, 4)
    for b in range(2):
        rx, _, ridx = ref_tome(x[b], torch.ones(12, dtype=x.dtype), x[b], 4)
        assert torch.equal(out.index[b], ridx)
        torch.testing.assert_close(out.x[b], rx)


def test_matching_merge_and_unmerge_are_consistent():
    x, size, metric = _rand(2, 9)
    m = bipartite_soft_matching(metric, 3)
    assert m.lengths is None and m.index.shape == (2, 9)
    merged, new_size = merge_wavg(m.merge, x, size)
    assert torch.equal(m.unmerge(merged), unmerge(merged, m.index))
    # every token is its own group member after unmerge of the sizes: size of its group
    assert torch.equal(m.unmerge(new_size.unsqueeze(-1)).squeeze(-1), new_size.gather(1, m.index))
    # other reductions: mode "amax" of one-hot sources marks each group's members
    eye = torch.eye(9, dtype=x.dtype).expand(2, 9, 9)
    src = m.merge(eye, "amax")
    assert torch.equal(src.sum(1), torch.ones(2, 9, dtype=x.dtype))
    assert torch.equal(src.argmax(1), m.index)


def test_unmerge_with_composed_map_equals_step_by_step():
    n = 48
    x, size, metric = _rand(2, n, seed=3)
    index = identity_map(2, n)
    steps, cur_x, cur_size, cur_metric = [], x, size, metric
    patch_slot = [list(range(n)) for _ in range(2)]  # reference: slot of each patch, followed step by step
    for r in (7, 5, 9, 30):
        m = bipartite_soft_matching(cur_metric, r)
        cur_x, cur_size = merge_wavg(m.merge, cur_x, cur_size)
        cur_metric = m.merge(cur_metric, "mean")
        steps.append(m)
        index = compose(index, m.index)
        patch_slot = [[int(m.index[b, patch_slot[b][i]]) for i in range(n)] for b in range(2)]
    full = unmerge(cur_x, index)
    # the ToMe-style unmerge closures, applied in reverse order
    step = cur_x
    for m in reversed(steps):
        step = m.unmerge(step)
    assert torch.equal(full, step)
    for b in range(2):
        assert index[b].tolist() == patch_slot[b]
        for i in range(n):
            assert torch.equal(full[b, i], cur_x[b, patch_slot[b][i]])
    # sizes sum to the patch count and count the patches mapped to each slot
    torch.testing.assert_close(cur_size.sum(1), size.sum(1))
    torch.testing.assert_close(merge_sizes(size, index, cur_x.shape[1]), cur_size)


def test_chained_steps_match_chained_reference():
    n = 40
    x, size, metric = _rand(1, n, seed=11)
    cur = (x[0], size[0], metric[0])
    out_x, out_size, out_metric = x, size, metric
    for r in (6, 6, 6):
        res, out_size_new = tome_merge(out_x, out_size, out_metric, r, return_size=True)
        m = bipartite_soft_matching(out_metric, r)
        rx, rsize, ridx = ref_tome(cur[0], cur[1], cur[2], r)
        assert torch.equal(res.index[0], ridx)
        torch.testing.assert_close(res.x[0], rx)
        # next metric: size-weighted mean of the metric as well (both sides do the same)
        rmetric, _, _ = groups_to_output([[i for i in range(len(ridx)) if ridx[i] == s] for s in range(len(rx))],
                                         cur[2], cur[1])
        out_metric, _ = merge_wavg(m.merge, out_metric, out_size)
        torch.testing.assert_close(out_metric[0], rmetric)
        out_x, out_size = res.x, out_size_new
        cur = (rx, rsize, rmetric)
    assert out_x.shape[1] == n - 18


def _padded(n_max, lengths, seed=0):
    x, size, metric = _rand(len(lengths), n_max, seed=seed)
    lengths = torch.tensor(lengths)
    valid = torch.arange(n_max) < lengths[:, None]
    size = size * valid
    # padding carries junk (finite and non-finite) that must not leak
    x = torch.where(valid[..., None], x, torch.full_like(x, float("inf")))
    metric = torch.where(valid[..., None], metric, torch.full_like(metric, float("nan")))
    return x, size, metric, lengths


@pytest.mark.parametrize("r", [0, 2, 4, 100])
def test_padded_input_exact_equals_each_image_alone(r):
    x, size, metric, lengths = _padded(13, [13, 9, 4, 1, 10], seed=r)
    out, new_size = tome_merge(x, size, metric, r, lengths, return_size=True)
    expect_len = lengths - torch.minimum(torch.tensor(r), lengths // 2)
    if bool((expect_len == expect_len.max()).all()):
        assert out.lengths is None
    else:
        assert torch.equal(out.lengths, expect_len)
    assert out.x.shape[1] == int(expect_len.max())
    assert torch.isfinite(out.x).all()
    for b, n_b in enumerate(lengths.tolist()):
        alone, alone_size = tome_merge(x[b:b + 1, :n_b], size[b:b + 1, :n_b], metric[b:b + 1, :n_b], r,
                                       return_size=True)
        m_b = alone.x.shape[1]
        assert m_b == int(expect_len[b])
        assert torch.equal(out.index[b, :n_b], alone.index[0])
        torch.testing.assert_close(out.x[b, :m_b], alone.x[0])
        torch.testing.assert_close(new_size[b, :m_b], alone_size[0])
        assert (new_size[b, m_b:] == 0).all() and (out.x[b, m_b:] == 0).all()
        # the runner's size bookkeeping (padded inputs have size 0)
        torch.testing.assert_close(merge_sizes(size, out.index, out.x.shape[1])[b], new_size[b])
    # plain reductions ignore padded inputs too
    m = bipartite_soft_matching(metric, r, lengths)
    assert torch.isfinite(m.merge(x, "amax")).all() and torch.isfinite(m.merge(x, "sum")).all()


def test_padded_input_batch_min_removes_the_batch_minimum():
    x, size, metric, lengths = _padded(12, [12, 5, 9], seed=5)
    out = tome_merge(x, size, metric, 4, lengths, policy="batch-min")
    # r per image min(4, L // 2) = 4, 2, 4 -> all remove 2
    assert torch.equal(out.lengths, lengths - 2)
    # dense input: exact and batch-min agree
    xd, sd, md = _rand(3, 12, seed=1)
    a = tome_merge(xd, sd, md, 4, policy="exact")
    b = tome_merge(xd, sd, md, 4, policy="batch-min")
    assert torch.equal(a.index, b.index) and torch.equal(a.x, b.x) and b.lengths is None


# --------------------------------------------------------------------------- #
# the method
# --------------------------------------------------------------------------- #


def test_method_registration_and_parameters():
    m = build_method("tome", range(12), r=8)
    assert isinstance(m, ToMe) and m.site == "after_attention" and not m.proportional_attention
    assert m.describe() == {"method": "tome", "schedule": list(range(12)), "batch_policy": "exact", "r": 8,
                            "prop_attn": False}
    assert build_method("tome", (3, 1), r=[5, 2], prop_attn=True).r_per_block == {3: 5, 1: 2}
    assert build_method("tome", (3, 1), prop_attn=True).proportional_attention
    assert build_method("tome").schedule == ()
    with pytest.raises(ConfigError):
        build_method("tome", (1, 2), r=[1, 2, 3])
    with pytest.raises(ConfigError):
        build_method("tome", (1,), r=-1)
    with pytest.raises(ConfigError):
        build_method("tome", (1,), r=0.5)
    with pytest.raises(ConfigError):
        build_method("tome", (1,), batch_policy="nope")


def test_method_merge_through_runner_step():
    x, size, metric = _rand(2, 20, seed=2)
    method = ToMe((0, 1), r=[3, 4])
    state = TokenState.initial(2, (4, 5), x.device, x.dtype)
    y = merge_step(x, state, method, 0, num_prefix=0, metric=metric)
    ref = tome_merge(x, None, metric, 3)
    assert torch.equal(state.index, ref.index) and torch.equal(y, ref.x)
    y2 = merge_step(y, state, method, 1, num_prefix=0, metric=None)
    assert y2.shape[1] == 13 and state.lengths is None
    torch.testing.assert_close(state.size.sum(1), torch.full((2,), 20.0, dtype=x.dtype))
    ctx = MergeContext(block=7, lengths=None, size=torch.ones(2, 20, dtype=x.dtype), metric=None, grid=(4, 5))
    assert method.merge(x, ctx).x.shape[1] == 20  # not a scheduled block: r = 0


# --------------------------------------------------------------------------- #
# end to end: Segmenter
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 128, 128, generator=g)


@torch.no_grad()
def test_segmenter_tome_backends_agree(seg, images):
    method = build_method("tome", range(12), r=8)
    logits_math, enc = seg(images, method=method, backend="math", return_encoder=True)
    logits_sdpa = seg(images, method=method, backend="sdpa")
    assert logits_math.shape == (2, 5, 128, 128)
    assert enc.tokens.shape == (2, 64, 192)
    assert [int(t[0]) for t in enc.tokens_left] == [56, 48, 40, 32, 24, 16, 8, 4, 2, 1, 1, 1]
    torch.testing.assert_close(logits_math, logits_sdpa, rtol=0, atol=1e-4)
    # a batch gives each image what it gets alone
    alone = seg(images[1:], method=method, backend="math")
    torch.testing.assert_close(logits_math[1:], alone, rtol=0, atol=1e-4)


@torch.no_grad()
def test_segmenter_tome_proportional_attention(seg, images):
    plain = build_method("tome", range(12), r=8)
    prop = build_method("tome", range(12), r=8, prop_attn=True)
    assert prop.proportional_attention
    a = seg(images, method=plain, backend="math")
    b = seg(images, method=prop, backend="math")
    c = seg(images, method=prop, backend="sdpa")
    assert (a - b).abs().max() > 1e-4
    torch.testing.assert_close(b, c, rtol=0, atol=1e-4)
    with pytest.raises(BackendError, match="fa2"):
        seg(images, method=prop, backend="fa2")
