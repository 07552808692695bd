"""Strudel et al.'s Segmenter format: ``checkpoint.pth`` with ``encoder.*`` / ``decoder.*`` keys and a
``variant.yml`` beside it that fixes the architecture."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from torch import Tensor

from mpm.errors import CheckpointError
from mpm.models.checkpoints.common import IMAGENET_MEAN, IMAGENET_STD, StateDict, _VIT_MEAN, _first_line, _pair
from mpm.models.segmenter import SegmenterConfig

class _VariantLoader(yaml.SafeLoader):
    """Safe YAML loader that also reads the ``!!python/tuple`` tags of Segmenter's
    ``variant.yml`` (written with ``yaml.dump`` of a dict holding tuples)."""


_VariantLoader.add_constructor(
    "tag:yaml.org,2002:python/tuple", lambda loader, node: tuple(loader.construct_sequence(node)))


def read_variant(path: str | os.PathLike) -> dict:
    """Read a Segmenter ``variant.yml``.

    Raises:
        CheckpointError: if it is missing or unreadable (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"variant file {str(path)!r} not found: Segmenter checkpoints need the variant.yml "
            "that comes with them (pass variant=... to give another path)")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_VariantLoader)  # noqa: S506 - safe loader
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise CheckpointError(f"variant file {str(path)!r} is not valid YAML: {_first_line(err)}") from None
    if not isinstance(data, Mapping):
        raise CheckpointError(f"variant file {str(path)!r} does not hold a mapping")
    return dict(data)


def config_from_segmenter_variant(
    variant: Mapping,
    *,
    num_classes: int | None = None,
    state_dict: Mapping[str, Tensor] | None = None,
) -> SegmenterConfig:
    """The :class:`SegmenterConfig` of a Segmenter ``variant.yml`` (whole file or ``net_kwargs``).

    Follows Segmenter's ``create_segmenter``: MLP ratio 4; the mask transformer has the
    encoder's width, ``width // 64`` heads and MLP width ``4 * width``; every LayerNorm
    uses PyTorch's default eps 1e-5. The class count comes from ``net_kwargs.n_cls``,
    else ``decoder.n_cls``, else ``num_classes``, else the ``state_dict``'s shapes.

    Raises:
        CheckpointError: on a missing or unsupported entry (distilled DeiT models).
    """
    net = variant.get("net_kwargs", variant)
    if not isinstance(net, Mapping):
        raise CheckpointError("variant: 'net_kwargs' is not a mapping")
    data = variant.get("dataset_kwargs") or {}

    def need(key: str) -> Any:
        if net.get(key) is None:
            raise CheckpointError(f"variant: net_kwargs has no {key!r}")
        return net[key]

    if net.get("distilled"):
        raise CheckpointError(
            f"variant: distilled models (backbone {net.get('backbone')!r}, with a distillation token) "
            "are not supported; use a non-distilled Segmenter checkpoint")
    dim, heads, depth, patch = (int(need(k)) for k in ("d_model", "n_heads", "n_layers", "patch_size"))
    image_size = net.get("image_size", data.get("crop_size"))
    if image_size is None:
        raise CheckpointError("variant: neither net_kwargs.image_size nor dataset_kwargs.crop_size is given")
    image_size = _pair(image_size, "variant: image_size")
    norm = net.get("normalization", data.get("normalization", "vit"))
    if norm == "vit":
        mean, std = _VIT_MEAN, _VIT_MEAN
    elif norm == "deit":
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        raise CheckpointError(f"variant: unknown normalization {norm!r}; expected 'vit' or 'deit'")
    dec = net.get("decoder") or {}
    if not isinstance(dec, Mapping):
        raise CheckpointError("variant: net_kwargs.decoder is not a mapping")
    name = str(dec.get("name", "mask_transformer"))
    n_cls = net.get("n_cls", dec.get("n_cls"))
    if n_cls is None:
        n_cls = num_classes
    if n_cls is None and state_dict is not None:
        for key, axis in (("decoder.cls_emb", 1), ("decoder.head.weight", 0)):
            if key in state_dict:
                n_cls = state_dict[key].shape[axis]
                break
    if n_cls is None:
        raise CheckpointError("variant: no n_cls and no way to infer the number of classes")
    if num_classes is not None and int(n_cls) != num_classes:
        raise CheckpointError(f"variant: n_cls is {n_cls}, {num_classes} were expected")
    common = dict(num_classes=int(n_cls), embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=4.0,
                  patch_size=patch, image_size=image_size, encoder_norm_eps=1e-5, decoder_norm_eps=1e-5,
                  pos_embed_interpolation="bilinear",
                  mean=mean, std=std)
    if name == "mask_transformer":
        if dec.get("n_layers") is None:
            raise CheckpointError("variant: decoder has no 'n_layers'")
        return SegmenterConfig(decoder="mask_transformer", decoder_depth=int(dec["n_layers"]), decoder_dim=dim,
                               decoder_heads=max(dim // 64, 1), decoder_mlp_dim=4 * dim, **common)
    if "linear" in name:
        return SegmenterConfig(decoder="linear", **common)
    raise CheckpointError(f"variant: unknown decoder {name!r}; expected 'mask_transformer' or 'linear'")


def convert_segmenter_state_dict(state_dict: Mapping[str, Tensor]) -> StateDict:
    """Segmenter's own state dict -> ours (the names already agree).

    Drops the ImageNet classifier ``encoder.head.*``.

    Raises:
        CheckpointError: on a distillation token or a key outside ``encoder.``/``decoder.``.
    """
    out: StateDict = {}
    for key, value in state_dict.items():
        if key in ("encoder.head.weight", "encoder.head.bias"):
            continue
        if key == "encoder.dist_token" or key.startswith("encoder.head_dist."):
            raise CheckpointError(f"key {key!r}: distilled models (distillation token) are not supported")
        if not key.startswith(("encoder.", "decoder.")):
            raise CheckpointError(f"unexpected key {key!r} (Segmenter keys start with 'encoder.' or 'decoder.')")
        out[key] = value
    return out
