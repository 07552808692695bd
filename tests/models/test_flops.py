"""Analytic FLOP count (mpm.models.flops) against the paper's figures and FlopCounterMode."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mpm.errors import ConfigError
from mpm.merging import MergeContext, MergeMethod, TokenMerge, build_method
from mpm.models.flops import FlopReport, flops_of_run, per_image_flops, segmenter_flops
from mpm.models.segmenter import SegmenterConfig, build_segmenter

SMALL = (128, 128)  # 8 x 8 = 64 patch tokens


def counted_flops(fn, *args, **kwargs):
    """(result, FLOPs) of ``fn`` under FlopCounterMode (2 FLOPs per MAC for mm/bmm/conv)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = fn(*args, **kwargs)
    return out, counter.get_total_flops()


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_segmenter(SegmenterConfig.preset("T", num_classes=5, image_size=SMALL))


@pytest.fixture(scope="module")
def two_images():
    """Two images that keep different token counts under MPM (noise vs. a smooth ramp)."""
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(1, 3, *SMALL, generator=g)
    ramp = torch.linspace(-1, 1, SMALL[1]).expand(1, 3, *SMALL).clone()
    return torch.cat([noise, ramp])


# ----------------------------------------------------------------- paper's dense figures


def test_dense_seg_t_512_matches_paper():
    rep = segmenter_flops(SegmenterConfig.preset("T", 150), (512, 512))
    assert 24.0 <= rep.total <= 27.0
    assert rep.total == pytest.approx(25.282, abs=1e-3)  # exact count; paper: 25
    assert rep.total == pytest.approx(
        rep.breakdown["patch_embed"] + sum(rep.breakdown["encoder_blocks"]) + rep.breakdown["decoder"])
    assert rep.breakdown["merge"] == 0 and rep.unmerge_bytes == 0 and rep.tokens["tokens_left"] == []


def test_dense_seg_s_and_b_512():
    s = segmenter_flops(SegmenterConfig.preset("S", 150), (512, 512))
    b = segmenter_flops(SegmenterConfig.preset("B", 150), (512, 512))
    assert s.total == pytest.approx(76.808, abs=1e-3)
    assert b.total == pytest.approx(258.589, abs=1e-3)
    assert abs(b.total - 258) / 258 < 0.10  # paper: 258


def test_dense_seg_l_paper_figure_is_the_512_count():
    """Seg-L/16 at 640 x 640 is 1342 GFLOPs; the paper's 800 is the count at 512 x 512.

    Exact count at 640 (1600 patches + class token, 24 blocks, 150-class mask
    transformer on 1750 tokens): 1342.1 GFLOPs, 68% above the paper's 800. The
    same model at 512 x 512 gives 799.3, within 0.1% of it, so the paper's
    figure (and fvcore's 671 x 2 it would otherwise be) is the 512 crop.
    """
    cfg = SegmenterConfig.preset("L", 150)
    assert cfg.image_size == (640, 640)
    at_640 = segmenter_flops(cfg, (640, 640))
    assert at_640.total == pytest.approx(1342.146, abs=1e-3)
    assert abs(at_640.total - 800) / 800 > 0.10  # documented discrepancy, not forced
    at_512 = segmenter_flops(cfg, (512, 512))
    assert abs(at_512.total - 800) / 800 < 0.01


def test_image_size_is_padded_to_patch_multiple():
    cfg = SegmenterConfig.preset("T", 150)
    assert segmenter_flops(cfg, (500, 505)).grid == (32, 32)
    assert segmenter_flops(cfg, (500, 505)).total == pytest.approx(segmenter_flops(cfg, (512, 512)).total)


# ----------------------------------------------------------------- behaviour of the count


def test_fewer_tokens_fewer_flops():
    cfg = SegmenterConfig.preset("B", 150)
    mpm = build_method("mpm", (2, 5))
    totals = [segmenter_flops(cfg, (512, 512), mpm, [t1, t1 * 0.7]).total for t1 in (1000, 900, 750.5, 600, 512)]
    assert all(a > b for a, b in zip(totals, totals[1:]))
    second = [segmenter_flops(cfg, (512, 512), mpm, [700, t2]).total for t2 in (700, 600, 450, 350)]
    assert all(a > b for a, b in zip(second, second[1:]))
    dense = segmenter_flops(cfg, (512, 512)).total
    assert totals[-1] < dense
    # earlier insertion of the same reduction is cheaper
    early = segmenter_flops(cfg, (512, 512), build_method("mpm", (1, 5)), [600, 420]).total
    late = segmenter_flops(cfg, (512, 512), build_method("mpm", (3, 5)), [600, 420]).total
    assert early < late


def test_mpm_merge_cost_and_decoder_unchanged():
    cfg = SegmenterConfig.preset("T", 150)
    rep = segmenter_flops(cfg, (512, 512), build_method("mpm", (2, 5)), [620, 410])
    dense = segmenter_flops(cfg, (512, 512))
    assert rep.breakdown["merge_steps"] == pytest.approx([2 * 1024**2 * 192 / 1e9, 2 * 620**2 * 192 / 1e9])
    assert rep.breakdown["decoder"] == dense.breakdown["decoder"]
    assert rep.breakdown["encoder_blocks"][:2] == dense.breakdown["encoder_blocks"][:2]
    assert rep.tokens["attention_tokens"] == [1025] * 2 + [621] * 3 + [411] * 7
    assert rep.unmerge_bytes > 0 and rep.breakdown["unmerge"] == 0
    assert rep.elementwise["total"] > 0
    json.dumps(rep.to_dict())


def test_errors():
    cfg = SegmenterConfig.preset("T", 150)
    mpm = build_method("mpm", (2, 5))
    with pytest.raises(ConfigError, match="2 merge step"):
        segmenter_flops(cfg, (512, 512), mpm, [600])
    with pytest.raises(ConfigError, match="not in"):
        segmenter_flops(cfg, (512, 512), mpm, [600, 700])
    with pytest.raises(ConfigError, match="per_image_flops"):
        segmenter_flops(cfg, (512, 512), mpm, [torch.tensor([600, 500]), torch.tensor([400, 300])])

    class Mystery(MergeMethod):
        name = "mystery"

    with pytest.raises(ConfigError, match="no FLOP formula for merge method 'mystery'"):
        segmenter_flops(cfg, (512, 512), Mystery((3,)), [500])
    with pytest.raises(ConfigError, match="out of range"):
        segmenter_flops(cfg, (512, 512), build_method("mpm", (12,)), [500])


def test_mean_of_per_image_reports():
    cfg = SegmenterConfig.preset("T", 150)
    mpm = build_method("mpm", (2, 5))
    reps = per_image_flops(cfg, (512, 512), mpm, [torch.tensor([700, 500]), torch.tensor([450, 300])])
    mean = FlopReport.combine(reps, "mean")
    total = FlopReport.combine(reps, "sum")
    assert mean.total == pytest.approx((reps[0].total + reps[1].total) / 2)
    assert total.total == pytest.approx(reps[0].total + reps[1].total)
    assert mean.tokens["tokens_left"] == [600, 375] and mean.num_images == 2
    # quadratic terms: the mean of per-image FLOPs >= FLOPs at the mean count
    assert mean.total >= segmenter_flops(cfg, (512, 512), mpm, [600, 375]).total
    json.dumps(total.to_dict())


# ----------------------------------------------------------------- against FlopCounterMode


def test_dense_matches_flop_counter(tiny):
    x = torch.randn(1, 3, *SMALL)
    (_, enc), counted = counted_flops(tiny, x, backend="math", return_encoder=True)
    rep = flops_of_run(tiny, x, None, enc)
    assert rep.total_flops == pytest.approx(counted, rel=0.02)
    assert rep.total_flops == pytest.approx(counted, rel=1e-9)  # every matmul is modelled


def test_mpm_matches_flop_counter_batch_1(tiny, two_images):
    method = build_method("mpm", (2, 5))
    for i in range(2):
        x = two_images[i : i + 1]
        (_, enc), counted = counted_flops(tiny, x, method=method, backend="math", return_encoder=True)
        assert int(enc.tokens_left[0]) < 64
        rep = flops_of_run(tiny, x, method, enc)
        assert rep.total_flops == pytest.approx(counted, rel=0.02)
        # also from plain floats (segmenter_flops) and from the tensors
        floats = [float(t) for t in enc.tokens_left]
        assert segmenter_flops(tiny.config, SMALL, method, floats).total == pytest.approx(rep.total)


def test_mpm_matches_flop_counter_batch_2(tiny, two_images):
    method = build_method("mpm", (2, 5))
    (_, enc), counted_batch = counted_flops(tiny, two_images, method=method, backend="math", return_encoder=True)
    counts = torch.stack(enc.tokens_left)  # (steps, B)
    assert (counts[:, 0] != counts[:, 1]).any(), "the two images should keep different token counts"
    # per image, each run alone, summed
    counted_alone = 0
    for i in range(2):
        (_, enc_i), flops_i = counted_flops(tiny, two_images[i : i + 1], method=method, backend="math",
                                            return_encoder=True)
        assert [int(t) for t in enc_i.tokens_left] == counts[:, i].tolist()
        counted_alone += flops_i
    per_image_sum = flops_of_run(tiny, two_images, method, enc, reduction="sum")
    assert per_image_sum.num_images == 2
    assert per_image_sum.total_flops == pytest.approx(counted_alone, rel=0.02)
    # the padded batch executes every step at the batch's largest count
    padded = flops_of_run(tiny, two_images, method, enc, reduction="sum", padded=True)
    assert padded.total_flops == pytest.approx(counted_batch, rel=0.02)
    assert padded.total_flops >= per_image_sum.total_flops
    mean = flops_of_run(tiny, two_images, method, enc.tokens_left)
    assert mean.total == pytest.approx(per_image_sum.total / 2)
    assert len(flops_of_run(tiny, two_images, method, enc, reduction="none")) == 2


def test_mpm_merge_step_alone_matches_flop_counter():
    x = torch.randn(2, 77, 96)
    method = build_method("mpm", (0,))
    ctx = MergeContext(block=0, lengths=None, size=torch.ones(2, 77), metric=None, grid=(7, 11))
    out, counted = counted_flops(method.merge, x, ctx)
    cfg = SegmenterConfig(num_classes=3, embed_dim=96, depth=2, num_heads=2)
    rep = segmenter_flops(cfg, (7 * 16, 11 * 16), method, [float(out.x.shape[1])])
    assert rep.breakdown["merge"] * 1e9 * 2 == pytest.approx(counted, rel=1e-9)


class PairsAfterAttention(MergeMethod):
    """A ToMe-like test method at the ``after_attention`` site (not registered).

    Scores set A (even tokens) against set B (odd tokens) on the keys, as ToMe
    does, then merges the first ``r`` adjacent pairs (a fixed choice, enough to
    check where the runner spends FLOPs). Costed with ToMe's formula.
    """

    name = "tome"
    site = "after_attention"
    r = 6

    def merge(self, x, ctx):
        metric = torch.nn.functional.normalize(ctx.metric, dim=-1)
        _ = metric[:, ::2] @ metric[:, 1::2].transpose(1, 2)
        b, n, _c = x.shape
        r = self.r
        pairs = (x[:, : 2 * r : 2] + x[:, 1 : 2 * r : 2]) / 2
        out = torch.cat([pairs, x[:, 2 * r :]], dim=1)
        i = torch.arange(n)
        index = torch.where(i < 2 * r, i // 2, i - r).expand(b, n)
        return TokenMerge(out, index, None)


def test_after_attention_site_matches_flop_counter(tiny):
    method = PairsAfterAttention((1, 4, 7))
    x = torch.randn(1, 3, *SMALL)
    (_, enc), counted = counted_flops(tiny, x, method=method, backend="math", return_encoder=True)
    assert [int(t) for t in enc.tokens_left] == [58, 52, 46]
    rep = flops_of_run(tiny, x, method, enc)
    assert rep.total_flops == pytest.approx(counted, rel=1e-9)
    # attention of a merging block at the old count, its MLP at the new one
    assert rep.tokens["attention_tokens"][1] == 65 and rep.tokens["mlp_tokens"][1] == 59
    assert rep.breakdown["merge_steps"][0] * 1e9 == pytest.approx(2 * 32 * 32 * 64)  # head dim 64


@pytest.mark.parametrize("name", ["tome", "algm"])
def test_registered_baselines_match_flop_counter(tiny, name):
    """ToMe / ALGM as implemented in mpm.merging (skipped until they are)."""
    try:
        method = build_method(name, (2, 5))
        x = torch.randn(1, 3, *SMALL)
        (_, enc), counted = counted_flops(tiny, x, method=method, backend="math", return_encoder=True)
    except (ConfigError, NotImplementedError, TypeError) as err:
        pytest.skip(f"{name} not usable here yet: {err}")
    rep = flops_of_run(tiny, x, method, enc)
    assert rep.total_flops == pytest.approx(counted, rel=0.02)


def test_tome_every_block_matches_flop_counter(tiny):
    """ToMe (after_attention, keys of head dim 64) on every block, r = 8, batch of 2."""
    try:
        method = build_method("tome", range(12), r=8)
    except ConfigError as err:
        pytest.skip(f"tome not usable here yet: {err}")
    x = torch.randn(2, 3, *SMALL)
    (_, enc), counted = counted_flops(tiny, x, method=method, backend="math", return_encoder=True)
    assert [int(t[0]) for t in enc.tokens_left] == [56, 48, 40, 32, 24, 16, 8, 4, 2, 1, 1, 1]
    rep = flops_of_run(tiny, x, method, enc, reduction="sum")
    assert rep.total_flops == pytest.approx(counted, rel=1e-9)
    assert rep.breakdown["merge_steps"][0] * 1e9 == pytest.approx(2 * (2 * 32 * 32 * 64))  # 2 images


@pytest.mark.parametrize("kwargs", [{}, {"metric": "keys"}, {"window": (2, 3)}])
def test_algm_local_then_global_matches_flop_counter(tiny, kwargs):
    """ALGM (after_attention; local windows in block 0, global bipartite in block 4), padded batch of 2."""
    try:
        method = build_method("algm", (0, 4), local_threshold=0.0, **kwargs)
    except ConfigError as err:
        pytest.skip(f"algm not usable here yet: {err}")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, *SMALL, generator=g)
    (_, enc), counted = counted_flops(tiny, x, method=method, backend="math", return_encoder=True)
    assert int(enc.tokens_left[0].max()) < 64
    rep = flops_of_run(tiny, x, method, enc, reduction="sum", padded=True)
    assert rep.total_flops == pytest.approx(counted, rel=1e-9)


def test_linear_decoder_matches_flop_counter():
    torch.manual_seed(0)
    model = build_segmenter(SegmenterConfig.preset("T", num_classes=7, image_size=SMALL, decoder="linear"))
    x = torch.randn(1, 3, 120, 136)  # padded to 128 x 144
    (_, enc), counted = counted_flops(model, x, method=build_method("mpm", (3,)), backend="math",
                                      return_encoder=True)
    rep = flops_of_run(model, x, build_method("mpm", (3,)), enc)
    assert rep.grid == (8, 9)
    assert rep.breakdown["decoder"] * 1e9 == pytest.approx(2 * 72 * 192 * 7)
    assert rep.total_flops == pytest.approx(counted, rel=1e-9)
