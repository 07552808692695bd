"""Run a timm VisionTransformer with merge sites and a chosen attention backend.

The runner re-implements the loop of ``VisionTransformer.forward_features`` over
the model's own modules (``timm.models.vision_transformer.Block``: ``norm1``,
``attn.qkv``, ``attn.proj``, ``ls1``, ``norm2``, ``mlp``, ``ls2``), so the weights
stay timm's and any timm ViT of that block type runs with merging. Before the
final norm's output is returned, one gather with the composed merge map
restores the full token grid.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, ContextManager

import torch
from torch import Tensor, nn

from mpm.backends import varlen_backends
from mpm.errors import BackendError, ConfigError
from mpm.merging.base import MergeContext, MergeMethod, NoMerge
from mpm.merging.maps import (compose, gather_mean, identity_map, merge_sizes, row_sources,
                             rows_to_padded, unmerge, unmerge_rows)
from mpm.models.attention import Packing, Varlen, attention, attention_packed

#: backends whose attention runs packed variable-length sequences (FlashAttention-2 varlen; :mod:`mpm.backends`)
VARLEN_BACKENDS = varlen_backends()
#: exact batches keep their tokens packed (no padding in the linear layers) with these backends ...
PACKED_BACKENDS = VARLEN_BACKENDS
#: ... and with every backend on these devices (attention then unpacks to a masked padded layout).
#: Empty: on an H100 this gained nothing over the padded layout for `math` (benchmarks/NOTES.md).
PACKED_DEVICES: tuple[str, ...] = ()

#: ``timer(section_name)`` returns a context manager timing that section
SectionTimer = Callable[[str], ContextManager]


def _no_timer(name: str) -> ContextManager:
    return contextlib.nullcontext()


@dataclass
class TokenState:
    """Bookkeeping of the image tokens while they flow through the encoder.

    Attributes:
        index: (B, N) composed map, original image token -> current slot.
        lengths: (B,) real image tokens per image (padded layout) or None.
        size: (B, M) float, original patches in each current token (0 on padding);
            None when the method does not use sizes.
        grid: (H, W) patch grid of the input.
        tokens_left: (B,) image tokens after each merge step, in order.
    """

    index: Tensor
    lengths: Tensor | None
    size: Tensor | None
    grid: tuple[int, int]
    tokens_left: list[Tensor] = field(default_factory=list)

    @classmethod
    def initial(cls, batch: int, grid: tuple[int, int], device, dtype, with_size: bool = True) -> "TokenState":
        n = grid[0] * grid[1]
        size = torch.ones(batch, n, device=device, dtype=dtype) if with_size else None
        return cls(identity_map(batch, n, device), None, size, grid)


@dataclass
class EncoderOutput:
    """Encoder result on the full grid.

    Attributes:
        tokens: (B, N, C) image tokens after the final norm, unmerged to the grid.
        prefix: (B, P, C) prefix (class) tokens after the final norm.
        grid: (H, W) patch grid.
        index: (B, N) composed merge map (identity for the dense model).
        tokens_left: list of (B,) image-token counts after each merge step.
    """

    tokens: Tensor
    prefix: Tensor
    grid: tuple[int, int]
    index: Tensor
    tokens_left: list[Tensor]


def check_vit(vit: nn.Module) -> None:
    """Fail clearly on a model the runner cannot drive."""
    from timm.models.vision_transformer import Block

    missing = [name for name in ("patch_embed", "blocks", "norm", "_pos_embed") if not hasattr(vit, name)]
    if missing:
        raise ConfigError(f"{type(vit).__name__} is not a timm VisionTransformer (missing {missing})")
    for i, blk in enumerate(vit.blocks):
        if type(blk) is not Block:
            raise ConfigError(
                f"block {i} of {type(vit).__name__} is a {type(blk).__name__}; merging supports "
                "timm.models.vision_transformer.Block only"
            )


def embed(vit: nn.Module, images: Tensor, pos_interpolation: str | None = None) -> tuple[Tensor, tuple[int, int]]:
    """Patch embedding + prefix tokens + position embedding.

    Args:
        images: (B, 3, H, W), H and W multiples of the patch size.
        pos_interpolation: how to resample the position embedding for a grid
            other than the training grid: None = timm's own (antialiased
            bicubic); ``"bicubic"`` / ``"bilinear"`` without antialiasing, as
            mmsegmentation / Segmenter's own code do.
    Returns:
        tokens (B, P + N, C) and the patch grid (H / p, W / p).
    """
    x = vit.patch_embed(images)
    if x.dim() == 4:  # dynamic_img_size: NHWC
        grid = (x.shape[1], x.shape[2])
    else:
        grid = tuple(vit.patch_embed.grid_size)
    trained = tuple(vit.patch_embed.grid_size)
    if pos_interpolation is None or grid == trained or vit.pos_embed is None or vit.no_embed_class:
        x = vit._pos_embed(x)
    else:
        from timm.layers import resample_abs_pos_embed

        pos = resample_abs_pos_embed(vit.pos_embed, new_size=list(grid), old_size=list(trained),
                                     num_prefix_tokens=vit.num_prefix_tokens,
                                     interpolation=pos_interpolation, antialias=False)
        b = x.shape[0]
        prefix = [t.expand(b, -1, -1) for t in (vit.cls_token, vit.reg_token) if t is not None]
        x = torch.cat(prefix + [x.reshape(b, -1, x.shape[-1])], dim=1) + pos
        x = vit.pos_drop(x)
    x = vit.patch_drop(x)
    x = vit.norm_pre(x)
    return x, grid


def merge_step(x: Tensor, state: TokenState, method: MergeMethod, block: int, num_prefix: int,
               metric: Tensor | None = None) -> Tensor:
    """Merge the image tokens of ``x`` (B, P + M, C) in place of ``state``; returns the new ``x``."""
    prefix, img = x[:, :num_prefix], x[:, num_prefix:]
    ctx = MergeContext(block=block, lengths=state.lengths, size=state.size, metric=metric, grid=state.grid,
                       index=state.index)
    res = method.merge(img, ctx)
    state.index = compose(state.index, res.index)
    if state.size is not None:
        state.size = merge_sizes(state.size, res.index, res.x.shape[1])
    state.lengths = res.lengths
    m = res.x.shape[1]
    state.tokens_left.append(res.lengths if res.lengths is not None else torch.full_like(state.index[:, 0], m))
    return torch.cat([prefix, res.x], dim=1)


def block_forward(blk: nn.Module, x: Tensor, *, backend: str, lengths: Tensor | None = None,
                  bias: Tensor | None = None, return_keys: bool = False,
                  packing: Packing | None = None) -> tuple[Tensor, Tensor | None]:
    """One timm ``Block`` up to and including the attention residual.

    Args:
        x: (B, N, C) tokens (padded layout if ``lengths``; lengths count all
            tokens), or (T, C) packed sequences when ``packing`` is given.
    Returns:
        x after ``x + ls1(attn(norm1(x)))`` and, with ``return_keys``, the keys
        averaged over heads, (B, N, D) (padded when packed).
    """
    attn = blk.attn
    h = blk.norm1(x)
    if packing is None:
        b, n, _ = x.shape
        qkv = attn.qkv(h).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = attn.q_norm(q), attn.k_norm(k)
        o = attention(q, k, v, backend=backend, lengths=lengths, bias=bias, scale=attn.scale)
        o = o.transpose(1, 2).reshape(b, n, attn.attn_dim)
        keys = k.mean(1) if return_keys else None
    elif backend in VARLEN_BACKENDS or isinstance(packing, Varlen):  # packed end to end
        if bias is not None:
            raise BackendError(f"attention backend {backend!r} takes no logit bias: proportional "
                               "attention (prop_attn) needs backend 'math' or 'sdpa'")
        t = x.shape[0]
        # (T, H, D) views of the packed qkv rows: the varlen kernel takes any row stride, so no copy
        q, k, v = attn.qkv(h).reshape(t, 3, attn.num_heads, attn.head_dim).unbind(1)
        q, k = attn.q_norm(q), attn.k_norm(k)
        o = attention_packed(q, k, v, packing, backend=backend, scale=attn.scale).reshape(t, attn.attn_dim)
        keys = packing.unpack(k.mean(1)) if return_keys else None
    else:  # linear layers packed, attention on the padded layout with key masks
        padded = packing.unpack(attn.qkv(h))  # (B, L, 3C)
        b, n, _ = padded.shape
        q, k, v = padded.reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = attn.q_norm(q), attn.k_norm(k)
        o = attention(q, k, v, backend=backend, lengths=packing.lengths, bias=bias, scale=attn.scale)
        o = packing.pack(o.transpose(1, 2).reshape(b, n, attn.attn_dim))
        keys = k.mean(1) if return_keys else None
    o = attn.norm(o)
    if getattr(attn, "gate", None) is not None:
        o = o * attn.gate(h).sigmoid()
    o = attn.proj_drop(attn.proj(o))
    x = x + blk.drop_path1(blk.ls1(o))
    return x, keys


def mlp_forward(blk: nn.Module, x: Tensor) -> Tensor:
    """The MLP residual of a timm ``Block``."""
    return x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))


def run_encoder(vit: nn.Module, images: Tensor, method: MergeMethod | None = None, backend: str = "sdpa",
                timer: SectionTimer | None = None, pos_interpolation: str | None = None) -> EncoderOutput:
    """Encode ``images`` (B, 3, H, W) with ``method`` merging at its scheduled sites.

    With ``NoMerge`` (or ``None``) the computation is that of the dense model.
    Sections timed through ``timer``: ``encoder``, ``merge``, ``unmerge``.
    ``pos_interpolation``: see :func:`embed`.
    """
    method = method or NoMerge()
    timer = timer or _no_timer
    num_prefix = vit.num_prefix_tokens
    packed = backend in PACKED_BACKENDS or images.device.type in PACKED_DEVICES
    with timer("encoder"):
        x, grid = embed(vit, images, pos_interpolation)
        state = TokenState.initial(x.shape[0], grid, x.device, x.dtype, with_size=method.uses_size)
        packing: Packing | None = None  # set while x is packed (T, C)
        for i, blk in enumerate(vit.blocks):
            if method.active(i, "before_block"):
                with timer("merge"):
                    x = packing.unpack(x) if packing is not None else x
                    x = merge_step(x, state, method, i, num_prefix)
                    packing = _packing(state, num_prefix, x) if packed else None
                    x = packing.pack(x) if packing is not None else x
            lengths = None if state.lengths is None else state.lengths + num_prefix
            bias = _size_bias(state, num_prefix) if method.proportional_attention and state.tokens_left else None
            mid = method.active(i, "after_attention")
            x, keys = block_forward(blk, x, backend=backend, lengths=lengths, bias=bias, return_keys=mid,
                                    packing=packing)
            if mid:
                with timer("merge"):
                    x = packing.unpack(x) if packing is not None else x
                    x = merge_step(x, state, method, i, num_prefix, metric=keys[:, num_prefix:])
                    packing = _packing(state, num_prefix, x) if packed else None
                    x = packing.pack(x) if packing is not None else x
            x = mlp_forward(blk, x)
        x = vit.norm(x)
        if packing is not None:
            x = packing.unpack(x)
    with timer("unmerge"):
        img = x[:, num_prefix:]
        tokens = img if not state.tokens_left else unmerge(img, state.index)
    return EncoderOutput(tokens, x[:, :num_prefix], grid, state.index, state.tokens_left)


def _packing(state: TokenState, num_prefix: int, x: Tensor) -> Packing | None:
    """Packing of a padded batch, or None when every image keeps the same count."""
    if state.lengths is None:
        return None
    return Packing(state.lengths + num_prefix, x.shape[1])


def _size_bias(state: TokenState, num_prefix: int) -> Tensor:
    """(B, 1, 1, P + M) log-size logit bias (ToMe's proportional attention; -inf on padding)."""
    b = state.size.shape[0]
    prefix = state.size.new_ones(b, num_prefix)
    return torch.cat([prefix, state.size], dim=1).log()[:, None, None, :]


# --------------------------------------------------------------------------- #
# the fast runner's pieces: tokens as rows of one flat buffer, no host sync
# inside a piece (mpm.models.segmenter.SegmenterRunner strings them together)
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Layout:
    """Host-side shape of a :class:`RowState` (hashable: part of a CUDA graph's key).

    Attributes:
        slots: padded: rows per image (x is (B * slots, C)); packed: an upper bound
            of any image's rows.
        packed: images back to back (FlashAttention-2's variable-length mode), the
            rows after the last image (capacity rounding) a sequence of their own.
        rows: R, rows of the buffer.
        uniform: every image has exactly ``slots`` rows (padded only): no key mask.
    """

    slots: int
    packed: bool
    rows: int
    uniform: bool


@dataclass
class RowState:
    """Tokens of a batch as rows of one (R, C) buffer: image ``b`` owns rows
    ``start[b] .. start[b] + length[b]``, its prefix (class) tokens first.

    Attributes:
        x: (R, C).
        layout: :class:`Layout`.
        start, length: (B,) long (length counts the prefix).
        index: (B, N) long, current image-token slot of every original patch.
        cu_seqlens: (B + 2,) int32 when packed.
        size: (B, slots - P) float, patches per token (methods with ``uses_size``), padded.
        tokens_left: (B,) image tokens after each merge step so far.
    """

    x: Tensor
    layout: Layout
    start: Tensor
    length: Tensor
    index: Tensor
    cu_seqlens: Tensor | None = None
    size: Tensor | None = None
    tokens_left: list[Tensor] = field(default_factory=list)

    @property
    def batch(self) -> int:
        return int(self.start.shape[0])

    def tensors(self) -> dict[str, Tensor]:
        """The device tensors, by name (what crosses a graph boundary)."""
        out = {"x": self.x, "start": self.start, "length": self.length, "index": self.index}
        if self.cu_seqlens is not None:
            out["cu_seqlens"] = self.cu_seqlens
        if self.size is not None:
            out["size"] = self.size
        out.update({f"left{k}": t for k, t in enumerate(self.tokens_left)})
        return out

    @classmethod
    def from_tensors(cls, t: dict[str, Tensor], layout: Layout) -> "RowState":
        left = [t[f"left{k}"] for k in range(sum(name.startswith("left") for name in t))]
        return cls(t["x"], layout, t["start"], t["length"], t["index"], t.get("cu_seqlens"), t.get("size"), left)

    def padded(self, values: Tensor | None = None) -> Tensor:
        """(B, L, D) padded view (a copy when packed) of the rows ``values`` (default ``x``)."""
        values = self.x if values is None else values
        if self.layout.packed:
            return rows_to_padded(values, self.start, self.layout.slots)
        return values.view(self.batch, self.layout.slots, -1)

    def attention_lengths(self) -> Tensor | None:
        """(B,) key lengths for a padded layout with padding, else None."""
        return None if self.layout.uniform or self.layout.packed else self.length

    def varlen(self) -> Varlen | None:
        if not self.layout.packed:
            return None
        return Varlen(self.cu_seqlens, self.layout.slots, self.start, self.length)


def rows_initial(x: Tensor, num_prefix: int, with_size: bool) -> RowState:
    """The state after the embedding: (B, P + N, C) tokens, every image full."""
    b, n_all, c = x.shape
    dev = x.device
    n = n_all - num_prefix
    size = torch.ones(b, n, device=dev, dtype=x.dtype) if with_size else None
    return RowState(x.reshape(b * n_all, c), Layout(n_all, False, b * n_all, True),
                    torch.arange(b, device=dev) * n_all, torch.full((b,), n_all, dtype=torch.long, device=dev),
                    identity_map(b, n, dev), None, size)


def rows_attention(blk: nn.Module, st: RowState, backend: str, num_prefix: int, bias_from_size: bool,
                   return_keys: bool) -> tuple[RowState, Tensor | None]:
    """The attention residual of one block on a :class:`RowState`; keys (B, L, D) padded if asked."""
    if st.layout.packed:
        x, keys = block_forward(blk, st.x, backend=backend, return_keys=return_keys, packing=st.varlen())
        st.x = x
        return st, keys
    bias = None
    if bias_from_size and st.size is not None:
        prefix = st.size.new_ones(st.batch, num_prefix)
        bias = torch.cat([prefix, st.size], dim=1).log()[:, None, None, :]
    x, keys = block_forward(blk, st.padded(), backend=backend, lengths=st.attention_lengths(), bias=bias,
                            return_keys=return_keys)
    st.x = x.reshape(st.layout.rows, -1)
    return st, keys


def rows_mlp(blk: nn.Module, st: RowState) -> RowState:
    st.x = mlp_forward(blk, st.x)
    return st


def rows_apply(st: RowState, plan, num_prefix: int, layout: Layout, clamp: bool = False) -> RowState:
    """Apply a :class:`~mpm.merging.mpm.RowPlan` (B, S) into a buffer of ``layout`` (rows and capacity
    decided on the host); the map and token counts follow. No host sync.

    ``clamp``: the capacity is a guess that may be too small; keep the map inside the rows
    (the caller checks the counts and discards such a forward)."""
    n_img = None if st.layout.uniform else st.length - num_prefix
    src = row_sources(plan.dest, plan.partner, plan.survivor, n_img, st.start, plan.kept, num_prefix,
                      layout.packed, layout.slots, layout.rows, index=st.index, clamp_index=clamp)
    x = gather_mean(st.x, src.src1, src.src2)
    return RowState(x, layout, src.start, src.length, src.index, src.cu_seqlens, None, st.tokens_left + [plan.kept])


def rows_fallback_merge(st: RowState, method: MergeMethod, block: int, num_prefix: int, grid: tuple[int, int],
                        keys: Tensor | None, packed: bool, host_lengths: bool) -> RowState:
    """Any :class:`~mpm.merging.base.MergeMethod` through its plain ``merge`` on the padded layout.

    ``host_lengths``: read the new token counts to the host when they differ per image
    (a sync; needed for a packed output), else keep the padded layout.
    """
    b = st.batch
    lengths = None if st.layout.uniform else st.length - num_prefix
    state = TokenState(st.index, lengths, st.size, grid, list(st.tokens_left))
    x = merge_step(st.padded(), state, method, block, num_prefix,
                   metric=None if keys is None else keys[:, num_prefix:])
    slots = x.shape[1]
    if state.lengths is None:
        start = torch.arange(b, device=x.device) * slots
        length = torch.full((b,), slots, dtype=torch.long, device=x.device)
        return RowState(x.reshape(b * slots, -1), Layout(slots, False, b * slots, True), start, length, state.index,
                        None, state.size, state.tokens_left)
    length = state.lengths + num_prefix
    if packed and host_lengths:
        host = length.tolist()  # the plain methods sync anyway
        packing = Packing(length, slots, host)
        rows = packing.total + 1  # one pad row keeps the pad sequence non-empty
        xs = x.new_zeros(rows, x.shape[-1])
        xs[: packing.total] = packing.pack(x)
        cu = torch.cat([packing.offsets, packing.offsets.new_full((1,), rows)]).to(torch.int32)
        return RowState(xs, Layout(slots, True, rows, False), packing.offsets[:-1], length, state.index, cu,
                        state.size, state.tokens_left)
    return RowState(x.reshape(b * slots, -1), Layout(slots, False, b * slots, False),
                    torch.arange(b, device=x.device) * slots, length, state.index, None, state.size,
                    state.tokens_left)


def rows_unmerge(st: RowState, num_prefix: int, clamp: bool = False) -> tuple[Tensor, Tensor]:
    """Image tokens on the full grid (B, N, C) with one gather, and the prefix tokens (B, P, C).
    ``clamp``: keep the gather inside the buffer (see :func:`rows_apply`)."""
    if not st.tokens_left:
        x = st.padded()
        return x[:, num_prefix:], x[:, :num_prefix]
    return unmerge_rows(st.x, st.start, st.index, num_prefix, clamp)
