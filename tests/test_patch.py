"""mpm.patch.timm on a plain timm ViT."""

from __future__ import annotations

import pytest
import timm
import torch

import mpm.patch
from mpm.errors import ConfigError


@pytest.fixture()
def vit():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10).eval()


def test_empty_schedule_is_the_original_model(vit) -> None:
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref = vit(x)
        mpm.patch.timm(vit, schedule=(), backend="sdpa")
        assert torch.equal(vit(x), ref)


def test_patched_forward_features_returns_full_grid(vit) -> None:
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        dense = vit.forward_features(x)
        mpm.patch.timm(vit, schedule=(2, 5), method="mpm")
        feats = vit.forward_features(x)
        logits = vit(x)
    assert feats.shape == dense.shape == (2, 1 + 196, 192)
    assert logits.shape == (2, 10)
    assert len(vit.mpm_tokens_left) == 2 and (vit.mpm_tokens_left[0] < 196).all()
    assert not torch.equal(feats, dense)
    mpm.patch.unpatch(vit)
    with torch.no_grad():
        assert torch.equal(vit.forward_features(x), dense)


def test_other_methods_and_errors(vit) -> None:
    x = torch.randn(1, 3, 224, 224)
    mpm.patch.timm(vit, schedule=range(12), method="tome", r=8)
    with torch.no_grad():
        assert vit.forward_features(x).shape == (1, 197, 192)
    with pytest.raises(ConfigError, match="out of range"):
        mpm.patch.timm(vit, schedule=(20,))
    with pytest.raises(ConfigError, match="not a timm VisionTransformer"):
        mpm.patch.timm(torch.nn.Linear(2, 2))
