"""Our Segmenter, loaded from an mmsegmentation checkpoint, computes mmseg's logits.

mmseg's own model (``EncoderDecoder`` + ``VisionTransformer`` + the decode head) is built
from the Segmenter configs shipped with mmseg, shrunk to a 64x64 crop and a few classes,
with every parameter (LayerNorms included) set to random values. Its state dict is
saved the way mmseg saves checkpoints (``{"meta": ..., "state_dict": ...}``), loaded with
:func:`load_segmenter`, and the logits are compared with ``model.encode_decode``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from mpm_testing import randomize
from torch import nn

from mpm.errors import BackendError
from mpm.merging import build_method
from mpm.models.attention import BACKENDS, check_backend
from mpm.models.checkpoints import load_segmenter

pytestmark = pytest.mark.mmseg

SIZE, NUM_CLASSES = 64, 7
MASK_T = "segmenter_vit-t_mask_8xb1-160k_ade20k-512x512.py"
LINEAR_S = "segmenter_vit-s_fcn_8xb1-160k_ade20k-512x512.py"


def _runs_on_cpu(backend: str) -> bool:
    try:
        check_backend(backend, "cpu", torch.float32)
    except BackendError:
        return False
    return True


BACKENDS_ON_CPU = tuple(b for b in BACKENDS if _runs_on_cpu(b))

# The model parts of mmseg's configs/segmenter files (as merged by mmengine), used when
# the installed mmseg does not ship its configs (.mim); checked against them when it does.
_BASE_BACKBONE = dict(
    type="VisionTransformer", img_size=(512, 512), patch_size=16, in_channels=3, embed_dims=768, num_layers=12,
    num_heads=12, drop_path_rate=0.1, attn_drop_rate=0.0, drop_rate=0.0, final_norm=True,
    norm_cfg=dict(type="LN", eps=1e-6, requires_grad=True), with_cls_token=True, interpolate_mode="bicubic")
_MASK_HEAD = dict(
    type="SegmenterMaskTransformerHead", in_channels=768, channels=768, num_classes=150, num_layers=2,
    num_heads=12, embed_dims=768, dropout_ratio=0.0,
    loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0))
_BASE_MODEL = dict(
    type="EncoderDecoder",
    data_preprocessor=dict(type="SegDataPreProcessor", mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5],
                           bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=(512, 512)),
    pretrained=None, backbone=_BASE_BACKBONE, decode_head=_MASK_HEAD,
    test_cfg=dict(mode="slide", crop_size=(512, 512), stride=(480, 480)))
REPLICAS = {
    MASK_T: dict(
        backbone=dict(embed_dims=192, num_heads=3),
        decode_head=dict(in_channels=192, channels=192, num_heads=3, embed_dims=192)),
    LINEAR_S: dict(
        backbone=dict(img_size=(512, 512), embed_dims=384, num_heads=6),
        decode_head=dict(_replace_=True, type="FCNHead", in_channels=384, channels=384, num_convs=0,
                         dropout_ratio=0.0, concat_input=False, num_classes=150,
                         loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0))),
}


def _merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and value.get("_replace_"):
            out[key] = {k: v for k, v in value.items() if k != "_replace_"}
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@pytest.fixture(scope="module")
def mm(mmseg):
    """mmseg with its model registry filled; returns (MODELS, config folder or None).

    (The ``mmseg`` fixture has registered the stand-in for mmcv-lite's missing ``mmcv._ext``.)
    """
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules()
    configs = Path(mmseg.__file__).parent / ".mim" / "configs" / "segmenter"
    return MODELS, (configs if configs.is_dir() else None)


def model_cfg(mm, name: str) -> dict:
    """The ``model`` dict of mmseg's config ``name``, shrunk to SIZE and NUM_CLASSES."""
    _, folder = mm
    if folder is not None and (folder / name).is_file():
        from mmengine.config import Config

        cfg = Config.fromfile(str(folder / name)).model.to_dict()
    else:
        cfg = _merge(_BASE_MODEL, REPLICAS[name])
    cfg["pretrained"] = None  # no download
    cfg["backbone"]["img_size"] = (SIZE, SIZE)
    cfg["decode_head"]["num_classes"] = NUM_CLASSES
    cfg["data_preprocessor"]["size"] = (SIZE, SIZE)
    cfg["test_cfg"] = dict(mode="whole")
    return cfg


def build_and_save(mm, name: str, tmp_path: Path, seed: int):
    """mmseg's model for config ``name`` (random weights) and its checkpoint file."""
    models, _ = mm
    cfg = model_cfg(mm, name)
    model = randomize(models.build(copy.deepcopy(cfg)), seed, spread=0.3)
    from mmengine.config import Config

    meta = {
        "cfg": Config(dict(model=cfg)).pretty_text,
        "mmengine_version": "0.10.7",
        "dataset_meta": {"classes": tuple(f"c{i}" for i in range(NUM_CLASSES)),
                         "palette": [[i, i, i] for i in range(NUM_CLASSES)]},
        "time": "20240101_000000",
    }
    path = tmp_path / f"{Path(name).stem}_iter_160000.pth"
    torch.save({"meta": meta, "state_dict": model.state_dict()}, path)
    return model, path


def mmseg_logits(model, x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    metas = [dict(img_shape=(h, w), pad_shape=(h, w), ori_shape=(h, w))] * x.shape[0]
    with torch.no_grad():
        return model.encode_decode(x, metas)


def layer_norm_eps(module: nn.Module) -> list[float]:
    return [m.eps for m in module.modules() if isinstance(m, nn.LayerNorm)]


@pytest.fixture(scope="module")
def saved(mm, tmp_path_factory):
    """name -> (mmseg's model, its checkpoint file), built once per module."""
    folder = tmp_path_factory.mktemp("mmseg_ckpt")
    return {name: build_and_save(mm, name, folder, seed=i) for i, name in enumerate(REPLICAS)}


def test_cpu_backends():
    assert {"math", "sdpa"} <= set(BACKENDS_ON_CPU)


@pytest.mark.parametrize("name, size, decoder", [(MASK_T, "T", "mask_transformer"), (LINEAR_S, "S", "linear")])
def test_logits_match_mmseg(saved, name, size, decoder):
    theirs, path = saved[name]
    ours = load_segmenter(path, num_classes=NUM_CLASSES)
    cfg = ours.config
    assert cfg.size_name == size and cfg.decoder == decoder
    assert cfg.image_size == (SIZE, SIZE) and cfg.mlp_ratio == 4.0 and cfg.encoder_norm_eps == 1e-6
    assert layer_norm_eps(ours.encoder) == layer_norm_eps(theirs.backbone)
    if decoder == "mask_transformer":
        assert (cfg.decoder_heads, cfg.decoder_depth, cfg.decoder_norm_eps) == (cfg.num_heads, 2, 1e-5)
        assert layer_norm_eps(ours.decoder) == layer_norm_eps(theirs.decode_head)
    assert cfg.mean == cfg.std == (127.5, 127.5, 127.5)

    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    ref = mmseg_logits(theirs, x)
    assert ref.shape == (2, NUM_CLASSES, SIZE, SIZE) and ref.std() > 0.1
    for backend in BACKENDS_ON_CPU:
        for method in (None, build_method("none"), build_method("mpm", ())):
            with torch.no_grad():
                out = ours(x, method=method, backend=backend)
            diff = (out - ref).abs().max().item()
            assert diff < 1e-4, f"{name} backend={backend} method={method}: max |diff| = {diff:.3g}"


def test_logits_match_mmseg_other_input_size(saved):
    theirs, path = saved[MASK_T]
    ours = load_segmenter(path)
    x = torch.randn(1, 3, 48, 80, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        diff = (ours(x, backend="math") - mmseg_logits(theirs, x)).abs().max().item()
    assert diff < 1e-4, f"max |diff| = {diff:.3g}"


def test_replica_configs_match_mmseg(mm):
    """The inline replicas (used where mmseg ships no configs) equal mmseg's files."""
    _, folder = mm
    if folder is None:
        pytest.skip("this mmseg install ships no configs (.mim)")
    from mmengine.config import Config

    for name, update in REPLICAS.items():
        real = Config.fromfile(str(folder / name)).model.to_dict()
        replica = _merge(_BASE_MODEL, update)
        real["pretrained"] = replica["pretrained"] = None
        assert real == replica, name
