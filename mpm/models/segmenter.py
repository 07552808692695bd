"""Segmenter (Strudel et al. 2021) on a timm ViT encoder, with merge sites.

>>> model = build_segmenter(SegmenterConfig.preset("T", num_classes=150))
>>> logits = model(images, method=build_method("mpm", (2, 5)), backend="math")
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from mpm.errors import ConfigError
from mpm.merging.base import MergeMethod, NoMerge
from mpm.models.decoders import LinearDecoder, MaskTransformer, upsample
from mpm.models.encoder import EncoderOutput, SectionTimer, _no_timer, check_vit, run_encoder

#: (embed_dim, depth, num_heads) of the ViT sizes Segmenter uses (patch 16)
VIT_SIZES: dict[str, tuple[int, int, int]] = {
    "T": (192, 12, 3),
    "S": (384, 12, 6),
    "B": (768, 12, 12),
    "L": (1024, 24, 16),
}


@dataclass(frozen=True)
class SegmenterConfig:
    """Everything that fixes a Segmenter's architecture and its input normalisation.

    ``mean``/``std`` are per RGB channel on the 0..255 scale (127.5 for
    Segmenter's "vit" normalisation, the same as mean = std = 0.5 on [0, 1]).
    """

    num_classes: int
    embed_dim: int = 192
    depth: int = 12
    num_heads: int = 3
    mlp_ratio: float = 4.0
    patch_size: int = 16
    image_size: tuple[int, int] = (512, 512)
    decoder: str = "mask_transformer"
    decoder_depth: int = 2
    decoder_dim: int | None = None
    decoder_heads: int | None = None
    decoder_mlp_dim: int | None = None
    encoder_norm_eps: float = 1e-6
    decoder_norm_eps: float = 1e-5
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    drop_path_rate: float = 0.0
    #: resampling of the position embedding for inputs other than ``image_size``
    #: (no antialiasing): "bicubic" as mmsegmentation, "bilinear" as Segmenter's own code
    pos_embed_interpolation: str = "bicubic"

    @classmethod
    def preset(cls, size: str, num_classes: int, **overrides: Any) -> "SegmenterConfig":
        """Seg-T/S/B/L with patch 16 (``size`` in T, S, B, L), mask-transformer decoder."""
        key = size.upper().removeprefix("VIT-").removeprefix("SEG-").split("/")[0]
        if key not in VIT_SIZES:
            raise ConfigError(f"unknown ViT size {size!r}; expected one of {', '.join(VIT_SIZES)}")
        dim, depth, heads = VIT_SIZES[key]
        if key == "L" and "image_size" not in overrides:
            overrides["image_size"] = (640, 640)
        return cls(num_classes=num_classes, embed_dim=dim, depth=depth, num_heads=heads, **overrides)

    @property
    def size_name(self) -> str:
        for name, dims in VIT_SIZES.items():
            if dims == (self.embed_dim, self.depth, self.num_heads):
                return name
        return f"d{self.embed_dim}x{self.depth}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "SegmenterConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown SegmenterConfig keys: {unknown}")
        data = dict(data)
        for key in ("image_size", "mean", "std"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


class Segmenter(nn.Module):
    """Segmenter: timm ViT encoder (with merge sites) + mask-transformer or linear decoder."""

    def __init__(self, config: SegmenterConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = VisionTransformer(
            img_size=config.image_size,
            patch_size=config.patch_size,
            embed_dim=config.embed_dim,
            depth=config.depth,
            num_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio,
            qkv_bias=True,
            class_token=True,
            global_pool="",
            num_classes=0,
            norm_layer=partial(nn.LayerNorm, eps=config.encoder_norm_eps),
            dynamic_img_size=True,
            drop_path_rate=config.drop_path_rate,
        )
        check_vit(self.encoder)
        if config.decoder == "mask_transformer":
            dim = config.decoder_dim or config.embed_dim
            self.decoder: nn.Module = MaskTransformer(
                config.num_classes, config.embed_dim, dim, config.decoder_depth,
                config.decoder_heads or max(dim // 64, 1), config.decoder_mlp_dim or 4 * dim,
                norm_eps=config.decoder_norm_eps,
            )
        elif config.decoder == "linear":
            self.decoder = LinearDecoder(config.num_classes, config.embed_dim)
        else:
            raise ConfigError(f"unknown decoder {config.decoder!r}; expected 'mask_transformer' or 'linear'")
        self.register_buffer("pixel_mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def patch_size(self) -> int:
        return self.config.patch_size

    def normalize(self, images_uint8: Tensor) -> Tensor:
        """(B, 3, H, W) images on the 0..255 scale -> model input."""
        return (images_uint8.to(self.pixel_mean.dtype) - self.pixel_mean) / self.pixel_std

    def encode(self, images: Tensor, method: MergeMethod | None = None, backend: str = "sdpa",
               timer: SectionTimer | None = None) -> EncoderOutput:
        """Run the encoder on normalised images whose sides are multiples of the patch size."""
        method = method or NoMerge()
        method.validate(self.config.depth)
        return run_encoder(self.encoder, images, method, backend, timer, self.config.pos_embed_interpolation)

    def forward(self, images: Tensor, method: MergeMethod | None = None, backend: str = "sdpa",
                timer: SectionTimer | None = None, return_encoder: bool = False):
        """Class logits (B, K, H, W) of normalised images (B, 3, H, W).

        Like Segmenter's own code, images are zero-padded (in normalised space)
        to a multiple of the patch size and the logits cropped back.
        Sections timed through ``timer``: ``encoder``, ``merge``, ``unmerge``, ``decoder``.
        """
        timer = timer or _no_timer
        h, w = images.shape[-2:]
        p = self.patch_size
        ph, pw = math.ceil(h / p) * p, math.ceil(w / p) * p
        if (ph, pw) != (h, w):
            images = F.pad(images, (0, pw - w, 0, ph - h))
        enc = self.encode(images, method, backend, timer)
        with timer("decoder"):
            masks = self.decoder(enc.tokens, enc.grid, backend=backend)
            logits = upsample(masks, (ph, pw))[..., :h, :w]
        return (logits, enc) if return_encoder else logits


def build_segmenter(config: SegmenterConfig | None = None, **kwargs: Any) -> Segmenter:
    """A randomly initialised Segmenter (``config`` or ``SegmenterConfig(**kwargs)``)."""
    if config is None:
        config = SegmenterConfig(**kwargs)
    elif kwargs:
        config = replace(config, **kwargs)
    return Segmenter(config).eval()
