"""Attention backends behind one function, chosen at run time.

=============  ==============================================================
backend        what runs
=============  ==============================================================
``math``       explicit ``softmax(q k^T * scale) v`` ("FA2 off"; what
               Segmenter's own code does). Any device and dtype.
``sdpa``       PyTorch ``scaled_dot_product_attention``, PyTorch picks the kernel.
``fa2``        PyTorch SDPA restricted to its FlashAttention-2 kernel ("FA2 on").
               CUDA and fp16/bf16 only; padded batches run as packed
               variable-length sequences through the same kernel's varlen mode.
``triton``     mpm's Triton FlashAttention forward (:mod:`mpm.models.triton_attention`):
               the same algorithm, compiled for the GPU at hand; padded batches
               as key-length-limited sequences, packed ones through cumulative
               lengths. CUDA and fp16/bf16 only.
``flash-attn`` the ``flash-attn`` package (``flash_attn_func`` /
               ``flash_attn_varlen_func``), where it is importable.
=============  ==============================================================

A backend that cannot run with the given inputs raises
:class:`~mpm.errors.BackendError`; nothing silently falls back to another.
"""

from __future__ import annotations

import importlib.util
import torch
import torch.nn.functional as F
from torch import Tensor

from mpm.backends import backend_names, backends, get_backend
from mpm.errors import BackendError
from mpm.models import triton_attention

#: a registered backend's name (:mod:`mpm.backends`)
Backend = str
BACKENDS: tuple[str, ...] = backend_names()
_HALF = (torch.float16, torch.bfloat16)


def flash_attn_available() -> bool:
    """Whether the optional ``flash-attn`` package is importable."""
    return importlib.util.find_spec("flash_attn") is not None


def check_backend(backend: str, device: torch.device | str, dtype: torch.dtype) -> None:
    """Raise :class:`BackendError` unless ``backend`` can run on ``device`` with ``dtype``."""
    device = torch.device(device)
    spec = get_backend(backend)
    anywhere = " / ".join(f"'{b.name}'" for b in backends() if not b.devices and not b.half_only)
    if not spec.runs_on(device.type):
        raise BackendError(
            f"attention backend {backend!r} needs a CUDA device, got {device}; "
            f"use {anywhere.replace(' / ', ' or ')} on this device"
        )
    if spec.half_only and dtype not in _HALF:
        raise BackendError(
            f"attention backend {backend!r} needs float16 or bfloat16 inputs, got {dtype}; "
            f"run the model in half precision or use {anywhere}"
        )
    if spec.package and importlib.util.find_spec(spec.package) is None:
        raise BackendError(f"attention backend {backend!r} needs the {spec.package} package ({spec.install})")


def key_padding_mask(lengths: Tensor, num_keys: int) -> Tensor:
    """(B, 1, 1, N) bool, True where key j of image b is real (j < lengths[b])."""
    return (torch.arange(num_keys, device=lengths.device) < lengths[:, None])[:, None, None, :]


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    backend: str = "sdpa",
    lengths: Tensor | None = None,
    bias: Tensor | None = None,
    scale: float | None = None,
) -> Tensor:
    """Multi-head attention of already projected q, k, v.

    Args:
        q, k, v: (B, H, N, D).
        backend: one of :data:`BACKENDS`.
        lengths: (B,) real tokens per image when the batch is padded (keys past
            ``lengths[b]`` are ignored; outputs there are unspecified), or None.
        bias: (B, 1, 1, N) additive logit bias (proportional attention), or None.
        scale: logit scale, default ``D ** -0.5``.
    Returns:
        (B, H, N, D).
    """
    check_backend(backend, q.device, q.dtype)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if backend == "math":
        return _math(q, k, v, lengths, bias, scale)
    if backend == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=_sdpa_mask(q, lengths, bias), scale=scale)
    if bias is not None and not get_backend(backend).takes_bias:
        biased = " or ".join(f"'{b.name}'" for b in backends() if b.takes_bias)
        raise BackendError(
            f"attention backend {backend!r} takes no logit bias: proportional attention "
            f"(ToMe's prop_attn) needs backend {biased}"
        )
    if backend == "fa2":
        return _fa2(q, k, v, lengths, scale)
    if backend == "triton":
        return _triton(q, k, v, lengths, scale)
    return _flash_attn(q, k, v, lengths, scale)


class Packing:
    """The real rows of a padded batch laid end to end: variable-length sequences.

    Built once per merge step (one host sync); packing and unpacking are then one
    ``index_select`` / ``index_copy`` each, and attention runs on the packed
    sequences without padding (FlashAttention-2's variable-length mode).

    Args:
        lengths: (B,) real rows per image (prefix tokens included).
        num_slots: L, the padded length.
    """

    def __init__(self, lengths: Tensor, num_slots: int, host_lengths: list[int] | None = None) -> None:
        self.batch, self.num_slots = int(lengths.shape[0]), num_slots
        self.lengths = lengths
        host = lengths.tolist() if host_lengths is None else list(host_lengths)  # the one host sync
        self.max_len, self.min_len, self.total = max(host), min(host), sum(host)
        device = lengths.device
        self.offsets = torch.zeros(self.batch + 1, dtype=torch.long, device=device)
        self.offsets[1:] = lengths.cumsum(0)
        self.cu_seqlens = self.offsets.to(torch.int32)
        # (T,) flat row indices into B * L: position within the sequence + b * L
        starts = torch.arange(self.batch, device=device) * num_slots - self.offsets[:-1]
        self.rows = torch.arange(self.total, device=device) + torch.repeat_interleave(
            starts, lengths, output_size=self.total)

    def pack(self, x: Tensor) -> Tensor:
        """(B, L, C) padded -> (T, C) packed."""
        return x.reshape(self.batch * self.num_slots, -1).index_select(0, self.rows)

    def unpack(self, values: Tensor) -> Tensor:
        """(T, C) packed -> (B, L, C) padded (padding zero)."""
        out = values.new_zeros(self.batch * self.num_slots, values.shape[-1])
        return out.index_copy_(0, self.rows, values).view(self.batch, self.num_slots, -1)


class Varlen:
    """Packed sequences described on the device only: no host sync to build or use.

    The fast runner's layout (:class:`mpm.models.encoder.RowState`): image ``b``
    owns rows ``start[b] .. start[b] + length[b]`` of a (R, C) buffer, back to back;
    the rows after the last image (capacity rounding) form one more sequence of
    their own, so they attend only among themselves and never touch an image.

    Args:
        cu_seqlens: (B + 2,) int32 cumulative lengths, the pad sequence last.
        max_len: a host upper bound of every sequence's length (FlashAttention-2
            takes an upper bound; blocks past a sequence's end exit at once).
        start, length: (B,) long, for :meth:`unpack`.
    """

    def __init__(self, cu_seqlens: Tensor, max_len: int, start: Tensor, length: Tensor) -> None:
        self.cu_seqlens, self.max_len = cu_seqlens, max_len
        self.start, self.lengths = start, length
        self.batch = int(start.shape[0])

    def unpack(self, values: Tensor) -> Tensor:
        """(R, D) rows -> (B, max_len, D) padded; slots past ``length[b]`` hold copies of real rows."""
        rows = (self.start[:, None] + torch.arange(self.max_len, device=values.device)).clamp_(max=values.shape[0] - 1)
        return values.index_select(0, rows.flatten()).view(self.batch, self.max_len, -1)


def attention_packed(q: Tensor, k: Tensor, v: Tensor, packing: Packing, backend: str = "fa2",
                     scale: float | None = None) -> Tensor:
    """Attention within each of the packed sequences of ``packing``.

    Args:
        q, k, v: (T, H, D), the sequences of ``packing`` end to end; each head's features contiguous
            (rows may be strided: views of one packed qkv projection).
    Returns:
        (T, H, D).
    """
    check_backend(backend, q.device, q.dtype)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if backend == "flash-attn":
        import flash_attn  # optional extra

        cu = packing.cu_seqlens
        return flash_attn.flash_attn_varlen_func(q, k, v, cu, cu, packing.max_len, packing.max_len,
                                                 softmax_scale=scale)
    if backend == "triton":
        return triton_attention.flash_varlen(q, k, v, packing.cu_seqlens, packing.max_len, scale)
    varlen = get_backend(backend).varlen  # else no varlen kernel: attention on the padded layout
    if not varlen and isinstance(packing, Varlen):  # a testing path: syncs once
        padded = [packing.unpack(t.flatten(1)).unflatten(-1, t.shape[1:]).transpose(1, 2) for t in (q, k, v)]
        out = attention(*padded, backend=backend, lengths=packing.lengths, scale=scale).transpose(1, 2).flatten(2)
        j = torch.arange(packing.max_len, device=q.device)
        valid = j < packing.lengths[:, None]
        rows = (packing.start[:, None] + j)[valid]
        return torch.zeros_like(q.flatten(1)).index_copy_(0, rows, out[valid]).view_as(q)
    if not varlen:  # no varlen kernel: masked attention on the padded layout
        padded = [packing.unpack(t.flatten(1)).unflatten(-1, t.shape[1:]).transpose(1, 2) for t in (q, k, v)]
        out = attention(*padded, backend=backend, lengths=packing.lengths, scale=scale)
        return packing.pack(out.transpose(1, 2).flatten(2)).view_as(q)
    return _fa2_varlen(q, k, v, packing, scale)


def _fa2_varlen(q: Tensor, k: Tensor, v: Tensor, packing: "Packing | Varlen", scale: float) -> Tensor:
    """PyTorch's FlashAttention-2 kernel (the one SDPA's flash backend calls) in its
    variable-length mode: (T, H, D) packed sequences with cumulative lengths.

    Called directly rather than through nested tensors, whose dispatch costs
    milliseconds per call (measured: ``benchmarks/kernels.py``). ``max_len`` may be
    an upper bound, so no host sync is needed (:class:`Varlen`).
    """
    cu = packing.cu_seqlens
    try:
        return torch.ops.aten._flash_attention_forward(
            q, k, v, cu, cu, packing.max_len, packing.max_len, 0.0, False, False, scale=scale)[0]
    except RuntimeError as err:
        raise BackendError(f"PyTorch's FlashAttention-2 kernel refused these packed inputs "
                           f"({q.shape[0]} rows, {q.dtype}, {q.device}): {err}") from err


#: devices on which the math backend pads its keys to a multiple of :data:`KEY_ALIGN`: cuBLAS's
#: half-precision products run at full rate only when the logits' rows (and the inner dimension of
#: ``softmax(...) @ v``) are 8-aligned, which Segmenter's 1025 (512 px) or 1601 (640 px) tokens are not
KEY_ALIGN_DEVICES: tuple[str, ...] = ("cuda",)
KEY_ALIGN = 8


def _math(q: Tensor, k: Tensor, v: Tensor, lengths: Tensor | None, bias: Tensor | None, scale: float) -> Tensor:
    n = k.shape[-2]
    pad = (-n) % KEY_ALIGN if q.device.type in KEY_ALIGN_DEVICES else 0
    if pad:  # zero keys and values past n, masked below: every product and the softmax run 8-aligned
        k, v = F.pad(k, (0, 0, 0, pad)), F.pad(v, (0, 0, 0, pad))
    if lengths is None and bias is None:
        attn = (q * scale) @ k.transpose(-2, -1)
        if pad:
            attn[..., n:] = float("-inf")  # N x pad entries only
    elif q.is_cuda or pad:  # memory-bound there: no extra pass over the (N x N) logits
        key_bias = _key_bias(q, lengths, bias, n)
        if pad:
            key_bias = F.pad(key_bias, (0, pad), value=_NEG_SCALE * torch.finfo(q.dtype).max)
        attn = _biased_logits(q, k, key_bias, scale)
    else:  # the textbook form
        attn = (q * scale) @ k.transpose(-2, -1)
        if bias is not None:
            attn = attn + bias
        if lengths is not None:
            attn = attn.masked_fill(~key_padding_mask(lengths, k.shape[-2]), float("-inf"))
    return attn.softmax(dim=-1) @ v


_NEG_SCALE = -0.25  # a padding key's bias, as a fraction of the dtype's max: exp() of it is 0, sums stay finite


def _key_bias(q: Tensor, lengths: Tensor | None, bias: Tensor | None, n: int) -> Tensor:
    """(B, n) additive bias per key: ``bias`` (e.g. log size) and a large negative on padding."""
    b = q.shape[0]
    neg = _NEG_SCALE * torch.finfo(q.dtype).max
    kb = q.new_zeros(b, n) if bias is None else bias.reshape(b, n).to(q.dtype).clamp(min=neg)
    if lengths is not None:
        kb = kb.masked_fill(~key_padding_mask(lengths, n).reshape(b, n), neg)
    return kb


def _biased_logits(q: Tensor, k: Tensor, key_bias: Tensor, scale: float) -> Tensor:
    """``scale * q k^T + key_bias`` in one matrix product: q (B, H, N, D), k (B, H, M, D),
    key_bias (B, M) -> (B, H, N, M).

    A per-key bias is folded into the product by one extra feature:
    ``[q * scale, 1] . [k, bias] = scale * q . k + bias`` (padded with zeros to a
    multiple of 8 features for the matrix units), so masking costs no extra pass
    over the (N x M) logits.
    """
    b, h, n, d = q.shape
    m = k.shape[-2]
    pad = (-(d + 1)) % 8
    qa = torch.cat([q * scale, q.new_ones(b, h, n, 1), q.new_zeros(b, h, n, pad)], dim=-1)
    ka = torch.cat([k, key_bias[:, None, :, None].expand(b, h, m, 1), k.new_zeros(b, h, m, pad)], dim=-1)
    return qa @ ka.transpose(-2, -1)


def _sdpa_mask(q: Tensor, lengths: Tensor | None, bias: Tensor | None) -> Tensor | None:
    if lengths is None:
        return None if bias is None else bias.to(q.dtype)
    mask = key_padding_mask(lengths, q.shape[-2])
    if bias is None:
        return mask
    return bias.to(q.dtype).masked_fill(~mask, float("-inf"))


def _fa2(q: Tensor, k: Tensor, v: Tensor, lengths: Tensor | None, scale: float) -> Tensor:
    if lengths is None:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        try:
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                return F.scaled_dot_product_attention(q, k, v, scale=scale)
        except RuntimeError as err:
            raise BackendError(f"PyTorch's FlashAttention-2 kernel refused these inputs "
                               f"(shape {tuple(q.shape)}, {q.dtype}, {q.device}): {err}") from err
    b, h, n, d = q.shape
    packing = Packing(lengths, n)
    packed = [packing.pack(t.transpose(1, 2).reshape(b, n, h * d)).view(-1, h, d) for t in (q, k, v)]
    out = _fa2_varlen(*packed, packing, scale)
    return packing.unpack(out.reshape(-1, h * d)).view(b, n, h, d).transpose(1, 2)


def _triton(q: Tensor, k: Tensor, v: Tensor, lengths: Tensor | None, scale: float) -> Tensor:
    """(B, H, N, D) through :func:`~mpm.models.triton_attention.flash_padded`: the (B * N, H, D) rows are views
    of the inputs wherever their batch stride is N rows (one qkv projection), so nothing is copied."""
    b, h, n, d = q.shape
    rows = [t.transpose(1, 2).reshape(b * n, h, d) for t in (q, k, v)]
    lens = None if lengths is None else lengths.to(torch.int32)
    out = triton_attention.flash_padded(*rows, n, lens, scale)
    return out.view(b, n, h, d).transpose(1, 2)


def _flash_attn(q: Tensor, k: Tensor, v: Tensor, lengths: Tensor | None, scale: float) -> Tensor:
    import flash_attn  # optional extra

    if lengths is None:
        out = flash_attn.flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), softmax_scale=scale)
        return out.transpose(1, 2)
    b, h, n, d = q.shape
    valid = torch.arange(n, device=q.device) < lengths[:, None]
    packed = [t.transpose(1, 2)[valid] for t in (q, k, v)]  # (T, H, D)
    cu = torch.zeros(b + 1, dtype=torch.int32, device=q.device)
    cu[1:] = lengths.cumsum(0)
    max_len = int(lengths.max())
    out = flash_attn.flash_attn_varlen_func(*packed, cu, cu, max_len, max_len, softmax_scale=scale)
    padded = out.new_zeros(b, n, h, d)
    padded[valid] = out
    return padded.transpose(1, 2)
