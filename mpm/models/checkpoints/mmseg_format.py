"""mmsegmentation (0.x and 1.x) Segmenter checkpoints: key mapping, state-dict conversion, and the
architecture read from tensor shapes and the config text stored in ``meta``."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from mpm.errors import CheckpointError
from mpm.models.checkpoints.common import StateDict, _VIT_MEAN, _pair
from mpm.models.checkpoints.config_text import _plain, parse_config_text
from mpm.models.segmenter import SegmenterConfig

#: key inside an mmseg ``TransformerEncoderLayer`` -> key inside a timm ``Block``
_MM_LAYER = {
    "ln1.weight": "norm1.weight",
    "ln1.bias": "norm1.bias",
    "attn.attn.in_proj_weight": "attn.qkv.weight",
    "attn.attn.in_proj_bias": "attn.qkv.bias",
    "attn.attn.out_proj.weight": "attn.proj.weight",
    "attn.attn.out_proj.bias": "attn.proj.bias",
    "ln2.weight": "norm2.weight",
    "ln2.bias": "norm2.bias",
    "ffn.layers.0.0.weight": "mlp.fc1.weight",
    "ffn.layers.0.0.bias": "mlp.fc1.bias",
    "ffn.layers.1.weight": "mlp.fc2.weight",
    "ffn.layers.1.bias": "mlp.fc2.bias",
}
_MM_LAYER_INV = {v: k for k, v in _MM_LAYER.items()}
_MM_STACKS = {"backbone": "encoder", "decode_head": "decoder"}
_MM_STACKS_INV = {v: k for k, v in _MM_STACKS.items()}
_MM_LAYER_RE = re.compile(r"^(backbone|decode_head)\.layers\.(\d+)\.(.+)$")
_OUR_BLOCK_RE = re.compile(r"^(encoder|decoder)\.blocks\.(\d+)\.(.+)$")

#: other mmseg keys -> ours; the tensor is transposed ("t") or a 1x1 conv flattened ("conv1x1")
_MM_FIXED: dict[str, tuple[str, str | None]] = {
    "backbone.patch_embed.projection.weight": ("encoder.patch_embed.proj.weight", None),
    "backbone.patch_embed.projection.bias": ("encoder.patch_embed.proj.bias", None),
    "backbone.cls_token": ("encoder.cls_token", None),
    "backbone.pos_embed": ("encoder.pos_embed", None),
    "backbone.ln1.weight": ("encoder.norm.weight", None),
    "backbone.ln1.bias": ("encoder.norm.bias", None),
    "decode_head.dec_proj.weight": ("decoder.proj_dec.weight", None),
    "decode_head.dec_proj.bias": ("decoder.proj_dec.bias", None),
    "decode_head.cls_emb": ("decoder.cls_emb", None),
    "decode_head.patch_proj.weight": ("decoder.proj_patch", "t"),
    "decode_head.classes_proj.weight": ("decoder.proj_classes", "t"),
    "decode_head.decoder_norm.weight": ("decoder.decoder_norm.weight", None),
    "decode_head.decoder_norm.bias": ("decoder.decoder_norm.bias", None),
    "decode_head.mask_norm.weight": ("decoder.mask_norm.weight", None),
    "decode_head.mask_norm.bias": ("decoder.mask_norm.bias", None),
    "decode_head.conv_seg.weight": ("decoder.head.weight", "conv1x1"),
    "decode_head.conv_seg.bias": ("decoder.head.bias", None),
}
_MM_FIXED_INV = {ours: theirs for theirs, (ours, _) in _MM_FIXED.items()}
#: prefixes of mmseg keys that play no part in inference
_MM_IGNORED = ("auxiliary_head.",)


def mmseg_key(key: str) -> str:
    """The mmsegmentation name of one of our state-dict keys (the key itself if none)."""
    if key in _MM_FIXED_INV:
        return _MM_FIXED_INV[key]
    m = _OUR_BLOCK_RE.match(key)
    if m and m.group(3) in _MM_LAYER_INV:
        return f"{_MM_STACKS_INV[m.group(1)]}.layers.{m.group(2)}.{_MM_LAYER_INV[m.group(3)]}"
    return key


def convert_mmseg_state_dict(state_dict: Mapping[str, Tensor]) -> StateDict:
    """An mmsegmentation Segmenter state dict -> ours.

    ``patch_proj``/``classes_proj`` are ``nn.Linear`` weights (``x W^T``) where ours are
    matrices applied as ``x P``, so ``P = W^T``; the linear decoder's 1x1 ``conv_seg``
    becomes ``decoder.head``. mmseg's Segmenter configs build the patch embedding
    without bias (``patch_bias=False``): a missing bias becomes zeros. ``auxiliary_head.*``
    (training only) is dropped.

    Raises:
        CheckpointError: naming the first key that has no counterpart.
    """
    out: StateDict = {}
    for key, value in state_dict.items():
        if key.startswith(_MM_IGNORED):
            continue
        m = _MM_LAYER_RE.match(key)
        if m:
            sub = _MM_LAYER.get(m.group(3))
            if sub is None:
                raise CheckpointError(f"unexpected key {key!r} (no counterpart in mpm's Segmenter)")
            out[f"{_MM_STACKS[m.group(1)]}.blocks.{m.group(2)}.{sub}"] = value
            continue
        if key not in _MM_FIXED:
            raise CheckpointError(f"unexpected key {key!r} (no counterpart in mpm's Segmenter)")
        ours, op = _MM_FIXED[key]
        if op == "t":
            if value.dim() != 2:
                raise CheckpointError(f"key {key!r}: expected a 2-d Linear weight, found shape {tuple(value.shape)}")
            value = value.t()
        elif op == "conv1x1":
            if value.dim() != 4 or tuple(value.shape[2:]) != (1, 1):
                raise CheckpointError(f"key {key!r}: expected a 1x1 conv weight (K, C, 1, 1), "
                                      f"found shape {tuple(value.shape)}")
            value = value.flatten(1)
        out[ours] = value
    weight = out.get("encoder.patch_embed.proj.weight")
    if weight is not None and "encoder.patch_embed.proj.bias" not in out:
        out["encoder.patch_embed.proj.bias"] = weight.new_zeros(weight.shape[0])
    return out


def config_from_mmseg(state_dict: Mapping[str, Tensor], meta: Mapping | None = None, *,
                      num_classes: int | None = None) -> SegmenterConfig:
    """The :class:`SegmenterConfig` of an mmsegmentation Segmenter checkpoint.

    Widths, depths, MLP widths, patch size and class count come from the tensor shapes.
    Heads, LayerNorm eps, the training image size and the input normalisation come from
    the config mmseg stores in ``meta`` (``meta["cfg"]`` in 1.x, ``meta["config"]`` in
    0.x; parsed without executing it) when present; otherwise the values of all of
    mmseg's Segmenter configs: ``width // 64`` heads (T 3, S 6, B 12, L 16, the same in
    the decode head), backbone eps 1e-6 (``backbone_norm_cfg``), decode-head eps 1e-5
    (``nn.LayerNorm``'s default: its ``norm_cfg`` is ``dict(type='LN')``), mean = std =
    127.5, and a square position-embedding grid.

    Raises:
        CheckpointError: naming a missing key or an unsupported setting.
    """
    cfg = _mmseg_cfg(meta)
    model_cfg = _section(cfg, "model")
    bb, head = _section(model_cfg, "backbone"), _section(model_cfg, "decode_head")
    _check_supported(bb, head)
    encoder_kw = _mmseg_encoder(state_dict, cfg, model_cfg, bb)
    k, decoder_kw = _mmseg_decoder(state_dict, head)
    if num_classes is not None and k != num_classes:
        raise CheckpointError(f"the checkpoint has {k} classes, {num_classes} were expected")
    try:
        return SegmenterConfig(num_classes=k, **encoder_kw, **decoder_kw)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"cannot describe this checkpoint: {err}") from None


def _section(cfg: Mapping, key: str) -> Mapping:
    """``cfg[key]`` when it is a mapping, else {}."""
    value = cfg.get(key)
    return value if isinstance(value, Mapping) else {}


def _need(state_dict: Mapping[str, Any], key: str, ndim: int, why: str) -> Tensor:
    """``state_dict[key]``, a tensor of ``ndim`` dimensions, or a CheckpointError naming the key."""
    if key not in state_dict:
        raise CheckpointError(f"missing key {key!r} (needed to infer {why})")
    value = state_dict[key]
    if not isinstance(value, Tensor) or value.dim() != ndim:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise CheckpointError(f"key {key!r}: expected a {ndim}-d tensor, found {shape}")
    return value


def _check_supported(bb: Mapping, head: Mapping) -> None:
    """Reject backbone and decode-head settings mpm's Segmenter does not implement."""
    if bb.get("type", "VisionTransformer") != "VisionTransformer":
        raise CheckpointError(f"backbone type {bb.get('type')!r} is not supported (VisionTransformer only)")
    if bb.get("with_cls_token", True) is not True:
        raise CheckpointError("backbone with_cls_token=False is not supported")
    for key, value in (("act_cfg", bb.get("act_cfg")), ("decode_head.act_cfg", head.get("act_cfg"))):
        if isinstance(value, Mapping) and value.get("type", "GELU") != "GELU":
            raise CheckpointError(f"{key} {value.get('type')!r} is not supported (GELU only)")


def _mmseg_encoder(state_dict: Mapping[str, Any], cfg: Mapping, model_cfg: Mapping, bb: Mapping) -> dict:
    """The encoder's :class:`SegmenterConfig` fields: shapes for widths, ``bb`` for heads, eps and size."""
    proj = _need(state_dict, "backbone.patch_embed.projection.weight", 4, "the width and patch size")
    dim, patch = int(proj.shape[0]), int(proj.shape[-1])
    if proj.shape[-2] != patch:
        raise CheckpointError(f"key 'backbone.patch_embed.projection.weight': non-square patches "
                              f"{tuple(proj.shape[-2:])} are not supported")
    depth = _count_layers(state_dict, "backbone.layers.")
    if depth == 0:
        raise CheckpointError("missing key 'backbone.layers.0.ln1.weight' (no transformer layers found)")
    heads = int(bb.get("num_heads") or max(dim // 64, 1))
    hidden = _need(state_dict, "backbone.layers.0.ffn.layers.0.0.weight", 2, "the MLP width").shape[0]
    pos = _need(state_dict, "backbone.pos_embed", 3, "the training image size")
    image_size = _mmseg_image_size(int(pos.shape[1]) - 1, patch, bb.get("img_size"))
    enc_eps = _norm_eps(bb.get("norm_cfg"), 1e-6 if not bb else 1e-5)
    mean, std = _mmseg_normalisation(cfg, model_cfg)
    return dict(embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=hidden / dim, patch_size=patch,
                image_size=image_size, encoder_norm_eps=enc_eps, mean=mean, std=std)


def _mmseg_decoder(state_dict: Mapping[str, Any], head: Mapping) -> tuple[int, dict]:
    """(number of classes, the decoder's :class:`SegmenterConfig` fields): mask transformer or linear."""
    if "decode_head.cls_emb" in state_dict:
        if head.get("type", "SegmenterMaskTransformerHead") != "SegmenterMaskTransformerHead":
            raise CheckpointError(f"decode_head type {head.get('type')!r} does not match the mask-transformer keys")
        cls_emb = _need(state_dict, "decode_head.cls_emb", 3, "the number of classes")
        k, dec_dim = int(cls_emb.shape[1]), int(cls_emb.shape[2])
        dec_depth = _count_layers(state_dict, "decode_head.layers.")
        dec_hidden = _need(state_dict, "decode_head.layers.0.ffn.layers.0.0.weight", 2,
                           "the decoder MLP width").shape[0] if dec_depth else 4 * dec_dim
        return k, dict(decoder="mask_transformer", decoder_depth=dec_depth, decoder_dim=dec_dim,
                       decoder_heads=int(head.get("num_heads") or max(dec_dim // 64, 1)),
                       decoder_mlp_dim=int(dec_hidden), decoder_norm_eps=_norm_eps(head.get("norm_cfg"), 1e-5))
    if "decode_head.conv_seg.weight" in state_dict:
        if head.get("num_convs", 0) != 0:
            raise CheckpointError(f"decode_head num_convs={head.get('num_convs')} is not supported "
                                  "(Segmenter's linear decoder is FCNHead with num_convs=0)")
        return int(_need(state_dict, "decode_head.conv_seg.weight", 4, "the number of classes").shape[0]), \
            dict(decoder="linear")
    raise CheckpointError("missing key 'decode_head.cls_emb' (mask transformer) or "
                          "'decode_head.conv_seg.weight' (linear decoder)")


def _count_layers(state_dict: Mapping[str, Any], prefix: str) -> int:
    found = {int(m.group(1)) for k in state_dict if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return max(found) + 1 if found else 0


def _mmseg_image_size(num_patches: int, patch: int, img_size: Any) -> tuple[int, int]:
    if img_size is not None:
        h, w = _pair(img_size, "backbone img_size")
        if (h // patch) * (w // patch) == num_patches:
            return (h // patch) * patch, (w // patch) * patch
    side = math.isqrt(num_patches)
    if side * side != num_patches:
        raise CheckpointError(f"key 'backbone.pos_embed': {num_patches} position embeddings do not form a "
                              "square grid and the config gives no matching img_size")
    return side * patch, side * patch


def _norm_eps(norm_cfg: Any, default: float) -> float:
    if isinstance(norm_cfg, Mapping):
        if norm_cfg.get("type", "LN") != "LN":
            raise CheckpointError(f"norm_cfg type {norm_cfg.get('type')!r} is not supported (LN only)")
        return float(norm_cfg.get("eps", 1e-5))
    return default


def _mmseg_normalisation(cfg: Mapping, model_cfg: Mapping) -> tuple[tuple, tuple]:
    for source in (model_cfg.get("data_preprocessor"), cfg.get("data_preprocessor"), cfg.get("img_norm_cfg")):
        if isinstance(source, Mapping) and source.get("mean") is not None and source.get("std") is not None:
            try:
                mean = tuple(float(v) for v in source["mean"])
                std = tuple(float(v) for v in source["std"])
            except (TypeError, ValueError):
                continue
            if len(mean) == 3 and len(std) == 3:
                return mean, std
    return _VIT_MEAN, _VIT_MEAN


def _mmseg_cfg(meta: Any) -> dict:
    """The config mmseg stored in a checkpoint's ``meta``, as plain data ({} if none)."""
    if not isinstance(meta, Mapping):
        return {}
    for key in ("cfg", "config"):
        value = meta.get(key)
        if isinstance(value, Mapping):
            return _plain(value)
        if isinstance(value, str):
            return parse_config_text(value)
    return {}
