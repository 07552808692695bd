"""Attention backends agree; backends that cannot run say so."""

from __future__ import annotations

import importlib
import pytest
import torch

from mpm.errors import BackendError
from mpm.models.attention import attention, check_backend


def _qkv(b=2, h=3, n=37, d=16, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, n, d, generator=g).to(dtype) for _ in range(3)]


def test_math_and_sdpa_agree_fp32() -> None:
    q, k, v = _qkv()
    torch.testing.assert_close(attention(q, k, v, "math"), attention(q, k, v, "sdpa"), rtol=1e-5, atol=1e-5)


def test_math_and_sdpa_agree_bf16() -> None:
    q, k, v = _qkv(dtype=torch.bfloat16)
    a = attention(q, k, v, "math").float()
    b = attention(q, k, v, "sdpa").float()
    assert (a - b).norm() / b.norm() < 1e-2


@pytest.mark.parametrize("backend", ["math", "sdpa"])
def test_padding_mask_equals_unpadded(backend: str) -> None:
    q, k, v = _qkv(b=3, n=20)
    lengths = torch.tensor([20, 13, 5])
    out = attention(q, k, v, backend, lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        alone = attention(q[b : b + 1, :, :n], k[b : b + 1, :, :n], v[b : b + 1, :, :n], backend)
        torch.testing.assert_close(out[b : b + 1, :, :n], alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["math", "sdpa"])
def test_bias_is_added_to_logits(backend: str) -> None:
    q, k, v = _qkv(b=1, n=6)
    size = torch.tensor([[1.0, 2.0, 1.0, 4.0, 1.0, 1.0]])
    bias = size.log()[:, None, None, :]
    out = attention(q, k, v, backend, bias=bias)
    ref = torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5 + bias, -1) @ v
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_flash_needs_cuda_and_half() -> None:
    with pytest.raises(BackendError, match="CUDA"):
        check_backend("fa2", "cpu", torch.float16)
    with pytest.raises(BackendError, match="float16 or bfloat16"):
        check_backend("fa2", "cuda", torch.float32)
    with pytest.raises(BackendError, match="unknown attention backend 'xformers'"):
        check_backend("xformers", "cpu", torch.float32)
    q, k, v = _qkv()
    with pytest.raises(BackendError, match="CUDA"):
        attention(q, k, v, "fa2")
    with pytest.raises(BackendError):
        attention(q.half(), k.half(), v.half(), "flash-attn")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", ["fa2", "sdpa", "math"])
def test_cuda_backends_agree_with_padding(backend: str) -> None:  # pragma: no cover - GPU hosts
    q, k, v = (t.cuda().half() for t in _qkv(b=3, n=40, d=64))
    lengths = torch.tensor([40, 21, 9], device="cuda")
    out = attention(q, k, v, backend, lengths=lengths).float()
    ref = attention(q.float(), k.float(), v.float(), "math", lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        assert (out[b, :, :n] - ref[b, :, :n]).norm() / ref[b, :, :n].norm() < 3e-3


@pytest.mark.parametrize("backend", ["math", "sdpa"])
def test_packed_sequences_equal_each_sequence_alone(backend: str) -> None:
    from mpm.models.attention import Packing, attention_packed

    lengths = torch.tensor([7, 3, 12])
    packing = Packing(lengths, 12)
    q, k, v = (torch.randn(int(lengths.sum()), 2, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    out = attention_packed(q, k, v, packing, backend)
    start = 0
    for n in lengths.tolist():
        sl = slice(start, start + n)
        alone = attention(*(t[sl].transpose(0, 1)[None] for t in (q, k, v)), "math")[0].transpose(0, 1)
        torch.testing.assert_close(out[sl], alone, rtol=1e-5, atol=1e-6)
        start += n
    padded = packing.unpack(q.flatten(1))
    assert padded.shape == (3, 12, 16) and torch.equal(packing.pack(padded), q.flatten(1))
    assert (padded[1, 3:] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_folded_key_bias_equals_masked_logits(dtype) -> None:
    """The CUDA form of masked math attention (bias folded into the product) on the CPU."""
    from mpm.models.attention import _biased_logits, _key_bias, key_padding_mask

    q, k, _ = _qkv(b=3, n=21, d=64, dtype=dtype)
    lengths = torch.tensor([21, 12, 4])
    size = torch.rand(3, 21) * 3 + 1
    bias = size.log()[:, None, None, :]
    folded = _biased_logits(q, k, _key_bias(q, lengths, bias, 21), 0.125).float().softmax(-1)
    plain = ((q * 0.125) @ k.transpose(-2, -1) + bias.to(dtype)).float()
    plain = plain.masked_fill(~key_padding_mask(lengths, 21), float("-inf")).softmax(-1)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(folded, plain, rtol=tol, atol=tol)


@pytest.mark.parametrize("masked", [False, True])
def test_math_key_alignment_keeps_outputs(monkeypatch, masked) -> None:
    """The math backend's 8-aligned keys (on CUDA) give the unaligned result (checked on the CPU)."""
    attention_module = importlib.import_module("mpm.models.attention")

    q, k, v = _qkv(b=3, n=21, d=64, dtype=torch.float32)
    lengths = torch.tensor([21, 12, 4]) if masked else None
    bias = (torch.rand(3, 21) * 3 + 1).log()[:, None, None, :] if masked else None
    plain = attention(q, k, v, "math", lengths=lengths, bias=bias)
    seen = []
    real_pad = attention_module.F.pad
    monkeypatch.setattr(attention_module, "KEY_ALIGN_DEVICES", ("cpu",))
    monkeypatch.setattr(attention_module.F, "pad", lambda t, p, **kw: seen.append(t.shape) or real_pad(t, p, **kw))
    aligned = attention(q, k, v, "math", lengths=lengths, bias=bias)
    assert seen and seen[0][-2] == 21  # the keys were padded (21 -> 24)
    if lengths is None:
        torch.testing.assert_close(aligned, plain, rtol=1e-5, atol=1e-6)
    else:  # outputs past an image's length are unspecified
        for i, n in enumerate(lengths.tolist()):
            torch.testing.assert_close(aligned[i, :, :n], plain[i, :, :n], rtol=1e-5, atol=1e-6)
