"""Segmenter decoders: the mask transformer and the linear decoder.

Parameter names follow Segmenter's own code (``proj_dec``, ``cls_emb``,
``blocks.*``, ``proj_patch``, ``proj_classes``, ``decoder_norm``, ``mask_norm``;
``head`` for the linear decoder), so its checkpoints load without renaming.
The mask transformer's blocks are timm ``Block``s, run through the same
attention backends as the encoder.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from mpm.models.encoder import block_forward, mlp_forward


class MaskTransformer(nn.Module):
    """Segmenter's mask transformer: class embeddings attend jointly with patches.

    Args:
        num_classes: K.
        encoder_dim: width of the encoder tokens.
        dim, depth, num_heads, mlp_dim: the decoder's transformer.
    """

    def __init__(self, num_classes: int, encoder_dim: int, dim: int, depth: int = 2, num_heads: int = 3,
                 mlp_dim: int | None = None, norm_eps: float = 1e-5, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.num_classes = num_classes
        mlp_dim = mlp_dim or 4 * dim
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio=mlp_dim / dim, qkv_bias=True, drop_path=dpr[i],
                  norm_layer=partial(nn.LayerNorm, eps=norm_eps))
            for i in range(depth)
        )
        self.cls_emb = nn.Parameter(torch.zeros(1, num_classes, dim))
        self.proj_dec = nn.Linear(encoder_dim, dim)
        self.proj_patch = nn.Parameter(dim**-0.5 * torch.randn(dim, dim))
        self.proj_classes = nn.Parameter(dim**-0.5 * torch.randn(dim, dim))
        self.decoder_norm = nn.LayerNorm(dim, eps=norm_eps)
        self.mask_norm = nn.LayerNorm(num_classes, eps=norm_eps)
        trunc_normal_(self.cls_emb, std=0.02)

    def forward(self, tokens: Tensor, grid: tuple[int, int], backend: str = "sdpa") -> Tensor:
        """tokens (B, N, C_enc) on the full grid -> class masks (B, K, H/p, W/p)."""
        b = tokens.shape[0]
        x = self.proj_dec(tokens)
        x = torch.cat([x, self.cls_emb.expand(b, -1, -1).to(x.dtype)], dim=1)
        for blk in self.blocks:
            x, _ = block_forward(blk, x, backend=backend)
            x = mlp_forward(blk, x)
        x = self.decoder_norm(x)
        patches = x[:, : -self.num_classes] @ self.proj_patch.to(x.dtype)
        classes = x[:, -self.num_classes :] @ self.proj_classes.to(x.dtype)
        patches = patches / patches.norm(dim=-1, keepdim=True)
        classes = classes / classes.norm(dim=-1, keepdim=True)
        masks = self.mask_norm(patches @ classes.transpose(1, 2))  # (B, N, K)
        return masks.transpose(1, 2).reshape(b, self.num_classes, grid[0], grid[1])


class LinearDecoder(nn.Module):
    """Segmenter's linear decoder: one linear layer per patch token."""

    def __init__(self, num_classes: int, encoder_dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.head = nn.Linear(encoder_dim, num_classes)

    def forward(self, tokens: Tensor, grid: tuple[int, int], backend: str = "sdpa") -> Tensor:
        b = tokens.shape[0]
        return self.head(tokens).transpose(1, 2).reshape(b, self.num_classes, grid[0], grid[1])


def interpolation_matrix(n_in: int, n_out: int, device=None, dtype=None) -> Tensor:
    """(n_out, n_in) weights of 1-D linear interpolation, as ``F.interpolate`` computes
    them for ``mode="bilinear", align_corners=False`` and an output ``size``."""
    dst = torch.arange(n_out, dtype=torch.float64)
    src = ((dst + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    w1 = src - i0
    mat = torch.zeros(n_out, n_in, dtype=torch.float64)
    mat.index_put_((torch.arange(n_out), i0), 1 - w1, accumulate=True)
    mat.index_put_((torch.arange(n_out), i1), w1, accumulate=True)
    return mat.to(device=device, dtype=dtype)


_MATRICES: dict[tuple, Tensor] = {}


def crop_to(logits: Tensor, h: int, w: int) -> Tensor:
    """(B, K, H', W') logits cut to (H, W); unchanged when they already fit, so that an exported
    graph holds no Slice that cuts nothing (ONNX Runtime may run one as a copy of the whole map)."""
    if logits.shape[-2:] == (h, w):
        return logits
    return logits[..., :h, :w]


def upsample(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear upsampling of (B, K, h, w) logits to ``size`` (align_corners=False).

    Bilinear interpolation is separable and linear, so it is computed as
    ``A_h @ X @ A_w^T`` with two small interpolation matrices: the same values as
    ``F.interpolate`` up to rounding, on the matrix units (several times faster on
    GPUs for Segmenter's 150-class logits).
    """
    b, k, h, w = masks.shape
    if masks.device.type != "cuda":
        # the mask product leaves a transposed view; on the CPU F.interpolate is several
        # times slower on it than on a contiguous copy (seen at Seg-T/16, 512 px, 1 thread)
        return F.interpolate(masks.contiguous(), size=size, mode="bilinear", align_corners=False)
    mats = []
    for n_in, n_out in ((h, size[0]), (w, size[1])):
        key = (n_in, n_out, masks.device, masks.dtype)
        if key not in _MATRICES:
            _MATRICES[key] = interpolation_matrix(n_in, n_out, masks.device, masks.dtype)
        mats.append(_MATRICES[key])
    return torch.matmul(torch.matmul(mats[0], masks), mats[1].t())
