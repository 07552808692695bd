"""The merging encoder: empty schedule == dense, exact batches == per image."""

from __future__ import annotations

import pytest
import torch

from mpm.merging import build_method
from mpm.models import SegmenterConfig, build_segmenter
from mpm.models.encoder import run_encoder


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_segmenter(SegmenterConfig.preset("T", num_classes=6, image_size=(128, 128)))


def _images(b: int, size=(128, 128), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # smooth images, so that neighbouring patches look alike and MPM merges a lot
    low = torch.randn(b, 3, size[0] // 32, size[1] // 32, generator=g)
    return torch.nn.functional.interpolate(low, size=size, mode="bilinear") + 0.05 * torch.randn(b, 3, *size, generator=g)


@pytest.mark.parametrize("backend", ["math", "sdpa"])
def test_empty_schedule_is_dense_bit_for_bit(model, backend: str) -> None:
    x = _images(2)
    vit = model.encoder
    for blk in vit.blocks:
        blk.attn.fused_attn = backend == "sdpa"
    with torch.no_grad():
        dense = vit.forward_features(x)
        for method in (None, build_method("none"), build_method("mpm", ()), build_method("tome", (), r=4)):
            out = run_encoder(vit, x, method, backend=backend)
            assert out.tokens_left == []
            assert torch.equal(torch.cat([out.prefix, out.tokens], 1), dense)
        logits = model(x, backend=backend)
        assert torch.equal(logits, model(x, method=build_method("mpm", ()), backend=backend))


@pytest.mark.parametrize("backend", ["math", "sdpa"])
@pytest.mark.parametrize("schedule", [(2, 5), (0, 1, 2), (4, 8, 11)])
def test_exact_batch_equals_per_image(model, backend: str, schedule) -> None:
    x = _images(4, seed=1)
    method = build_method("mpm", schedule, batch_policy="exact")
    with torch.no_grad():
        logits, enc = model(x, method=method, backend=backend, return_encoder=True)
        counts = torch.stack(enc.tokens_left)  # (steps, B)
        assert (counts[:, 1:] != counts[:, :1]).any(), "test images should keep different token counts"
        for b in range(4):
            alone, alone_enc = model(x[b : b + 1], method=method, backend=backend, return_encoder=True)
            torch.testing.assert_close(logits[b : b + 1], alone, rtol=1e-4, atol=1e-4)
            assert torch.equal(enc.index[b], alone_enc.index[0])
            assert [int(t[b]) for t in enc.tokens_left] == [int(t[0]) for t in alone_enc.tokens_left]


def test_batch_min_is_dense_and_merges_no_more_than_exact(model) -> None:
    x = _images(3, seed=2)
    with torch.no_grad():
        _, exact = model(x, method=build_method("mpm", (2, 5)), return_encoder=True)
        _, bmin = model(x, method=build_method("mpm", (2, 5), batch_policy="batch-min"), return_encoder=True)
    first = bmin.tokens_left[0]
    assert (first == first[0]).all()
    assert int(first[0]) == int(exact.tokens_left[0].max())


def test_merging_reduces_tokens_and_keeps_shape(model) -> None:
    x = _images(2, seed=3)
    with torch.no_grad():
        dense = model(x)
        merged, enc = model(x, method=build_method("mpm", (2, 5)), return_encoder=True)
    n = (128 // 16) ** 2
    assert merged.shape == dense.shape == (2, 6, 128, 128)
    assert all((t < n).all() and (t >= n // 4).all() for t in enc.tokens_left)
    assert (enc.tokens_left[1] <= enc.tokens_left[0]).all()


def test_non_multiple_input_is_padded(model) -> None:
    x = _images(1, size=(100, 90))
    with torch.no_grad():
        out = model(x, method=build_method("mpm", (2, 5)))
    assert out.shape == (1, 6, 100, 90)


def test_schedule_out_of_range(model) -> None:
    from mpm.errors import ConfigError

    with pytest.raises(ConfigError, match="out of range"):
        model(_images(1), method=build_method("mpm", (2, 12)))
    with pytest.raises(ConfigError, match="unknown merge method 'foo'"):
        build_method("foo", (1,))


@pytest.mark.parametrize("name,schedule,kwargs", [("mpm", (2, 5), {}), ("algm", (), {}), ("algm", (), {"prop_attn": True}),
                                                  ("tome", (1, 3), {"r": 5})])
def test_packed_layout_equals_padded_layout(model, monkeypatch, name, schedule, kwargs) -> None:
    """The packed variable-length path (what FA2 runs on CUDA) against the padded one, on the CPU."""
    import mpm.models.encoder as encoder

    x = _images(3, seed=4)
    method = build_method(name, schedule, **kwargs)
    with torch.no_grad():
        padded, enc = model(x, method=method, backend="sdpa", return_encoder=True)
        monkeypatch.setattr(encoder, "PACKED_BACKENDS", ("sdpa", "math"))
        for varlen in ((), ("sdpa", "math")):  # attention padded+masked / through attention_packed
            monkeypatch.setattr(encoder, "VARLEN_BACKENDS", varlen)
            for backend in ("sdpa", "math"):
                if varlen and kwargs.get("prop_attn"):
                    continue  # varlen kernels take no logit bias (FA2 refuses it)
                packed, penc = model(x, method=method, backend=backend, return_encoder=True)
                torch.testing.assert_close(packed, padded, rtol=1e-4, atol=1e-4)
                assert torch.equal(penc.index, enc.index)


@pytest.mark.parametrize("h,w,out_h,out_w", [(32, 32, 512, 512), (7, 5, 100, 90), (40, 40, 640, 640), (3, 4, 3, 4)])
def test_separable_upsample_matches_interpolate(h, w, out_h, out_w) -> None:
    from mpm.models.decoders import interpolation_matrix

    x = torch.randn(2, 3, h, w, dtype=torch.float64)
    ref = torch.nn.functional.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=False)
    out = interpolation_matrix(h, out_h, dtype=x.dtype) @ x @ interpolation_matrix(w, out_w, dtype=x.dtype).t()
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
