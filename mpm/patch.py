"""One-line merging for any timm VisionTransformer.

>>> import timm, mpm.patch
>>> model = timm.create_model("vit_small_patch16_224")
>>> mpm.patch.timm(model, schedule=(2, 5), method="mpm")
>>> feats = model.forward_features(images)   # (B, P + N, C): the full, unmerged grid

After patching, ``forward_features`` merges tokens at the scheduled blocks and
restores the full token grid (prefix tokens first, then one row per patch), so
``forward_head`` and any dense head downstream work unchanged.
``model.mpm_tokens_left`` holds, after each call, the (B,) image-token counts
after every merge step. ``mpm.patch.unpatch(model)`` undoes the patch.
"""

from __future__ import annotations

import types
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from mpm.backends import get_backend
from mpm.merging.base import MergeMethod, build_method
from mpm.models.encoder import check_vit, run_encoder

__all__ = ["timm", "unpatch"]


def timm(model: nn.Module, schedule: Sequence[int] | str = (2, 5), method: str | MergeMethod = "mpm",
         backend: str = "sdpa", batch_policy: str = "exact", **method_kwargs: Any) -> nn.Module:
    """Patch a timm ``VisionTransformer`` in place so it merges tokens; returns the model.

    Args:
        model: a timm VisionTransformer whose blocks are ``timm.models.vision_transformer.Block``.
        schedule: the blocks (0-based) with a merge site, e.g. ``(2, 5)`` for MPM(2,5),
            or ``"all"`` (ToMe's usual setting).
        method: ``"mpm"``, ``"tome"``, ``"algm"``, ``"none"`` or a :class:`MergeMethod`.
        backend: a registered attention backend (:func:`mpm.backends.backend_names`).
        batch_policy: ``"exact"`` or ``"batch-min"`` for methods with per-image counts.
        method_kwargs: extra parameters of the method (ToMe's ``r``, ALGM's thresholds).
    """
    check_vit(model)
    merge = method if isinstance(method, MergeMethod) else build_method(
        method, schedule, depth=len(model.blocks), batch_policy=batch_policy, **method_kwargs)
    merge.validate(len(model.blocks))
    get_backend(backend)  # an unknown name fails here, naming the registered ones
    if not hasattr(model, "_mpm_original_forward_features"):
        model._mpm_original_forward_features = model.forward_features
    model.mpm_method = merge
    model.mpm_backend = backend
    model.mpm_tokens_left = []
    model.forward_features = types.MethodType(_forward_features, model)
    return model


def unpatch(model: nn.Module) -> nn.Module:
    """Undo :func:`timm`."""
    original = model.__dict__.pop("_mpm_original_forward_features", None)
    if original is not None:
        model.__dict__.pop("forward_features", None)
        for name in ("mpm_method", "mpm_backend", "mpm_tokens_left"):
            model.__dict__.pop(name, None)
    return model


def _forward_features(self: nn.Module, x: Tensor, attn_mask: Tensor | None = None, **kwargs: Any) -> Tensor:
    if attn_mask is not None or kwargs.get("is_causal"):
        raise ValueError("mpm.patch: merging models take no attention mask")
    out = run_encoder(self, x, self.mpm_method, self.mpm_backend)
    self.mpm_tokens_left = out.tokens_left
    return torch.cat([out.prefix, out.tokens], dim=1)
