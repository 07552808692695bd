"""Checkpoint loading: our format, Segmenter's own, mmsegmentation's, and the errors.

The foreign layouts are produced here from a randomly initialised model of ours with
inverse mappings written independently of ``mpm.models.checkpoints`` (the mmseg
equivalence test checks the mmseg layout against mmseg's real model).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import pickle

import pytest
import torch
from mpm_testing import randomize
import yaml

from mpm.errors import CheckpointError
from mpm.merging import build_method
from mpm.models.checkpoints import (
    FORMAT_TAG,
    IMAGENET_MEAN,
    IMAGENET_STD,
    config_from_mmseg,
    config_from_segmenter_variant,
    convert_mmseg_state_dict,
    convert_segmenter_state_dict,
    detect_format,
    load_segmenter,
    parse_config_text,
    read_variant,
    save_segmenter,
)
from mpm.models.segmenter import SegmenterConfig, build_segmenter

DIM, DEPTH, K, SIZE = 128, 2, 5, 64


def make_model(seed: int = 0, **overrides) -> torch.nn.Module:
    kw = dict(num_classes=K, embed_dim=DIM, depth=DEPTH, num_heads=DIM // 64, image_size=(SIZE, SIZE))
    kw.update(overrides)
    return randomize(build_segmenter(SegmenterConfig(**kw)), seed)


def logits(model, x, backend="math"):
    with torch.no_grad():
        return model(x, backend=backend)


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def assert_same_logits(a, b, x):
    la, lb = logits(a, x), logits(b, x)
    assert la.shape == lb.shape
    torch.testing.assert_close(la, lb, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------- foreign layouts


def to_segmenter_layout(model) -> dict:
    """Segmenter's own names are ours, plus its ImageNet head (which the loader drops)."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["encoder.head.weight"] = torch.randn(1000, model.config.embed_dim)
    sd["encoder.head.bias"] = torch.randn(1000)
    return sd


def segmenter_variant(config: SegmenterConfig, normalization="vit", decoder="mask_transformer") -> dict:
    """A variant dict shaped like the one Segmenter's train.py dumps (tuples included)."""
    dec = {"drop_path_rate": 0.0, "dropout": 0.1, "name": decoder, "n_cls": config.num_classes}
    if decoder == "mask_transformer":
        dec["n_layers"] = config.decoder_depth
    net = {
        "backbone": "vit_tiny_patch16_384", "d_model": config.embed_dim, "n_heads": config.num_heads,
        "n_layers": config.depth, "patch_size": config.patch_size, "image_size": tuple(config.image_size),
        "normalization": normalization, "distilled": False, "dropout": 0.0, "drop_path_rate": 0.1,
        "decoder": dec, "n_cls": config.num_classes,
    }
    return {
        "world_batch_size": 8, "version": "normal", "resume": True,
        "dataset_kwargs": {"dataset": "ade20k", "image_size": 512, "crop_size": config.image_size[0],
                           "batch_size": 8, "normalization": normalization, "split": "train", "num_workers": 10},
        "net_kwargs": net, "amp": False, "log_dir": "seg_tiny_mask",
        "inference_kwargs": {"im_size": 512, "window_size": 512, "window_stride": 512},
    }


def write_segmenter(folder: pathlib.Path, model, variant: dict | None = None, **variant_kw) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"model": to_segmenter_layout(model), "n_cls": model.num_classes, "epoch": 63},
               folder / "checkpoint.pth")
    variant = variant or segmenter_variant(model.config, **variant_kw)
    (folder / "variant.yml").write_text(yaml.dump(variant))  # default Dumper: !!python/tuple tags
    return folder / "checkpoint.pth"


def to_mmseg_layout(model, patch_bias: bool = False) -> dict:
    """mmsegmentation's Segmenter names, written out by hand."""
    sd = model.state_dict()
    out = {
        "backbone.cls_token": sd["encoder.cls_token"],
        "backbone.pos_embed": sd["encoder.pos_embed"],
        "backbone.patch_embed.projection.weight": sd["encoder.patch_embed.proj.weight"],
        "backbone.ln1.weight": sd["encoder.norm.weight"],
        "backbone.ln1.bias": sd["encoder.norm.bias"],
    }
    if patch_bias:
        out["backbone.patch_embed.projection.bias"] = sd["encoder.patch_embed.proj.bias"]

    def layer(src: str, dst: str) -> None:
        for p in ("weight", "bias"):
            out[f"{dst}.ln1.{p}"] = sd[f"{src}.norm1.{p}"]
            out[f"{dst}.ln2.{p}"] = sd[f"{src}.norm2.{p}"]
            out[f"{dst}.attn.attn.out_proj.{p}"] = sd[f"{src}.attn.proj.{p}"]
            out[f"{dst}.ffn.layers.0.0.{p}"] = sd[f"{src}.mlp.fc1.{p}"]
            out[f"{dst}.ffn.layers.1.{p}"] = sd[f"{src}.mlp.fc2.{p}"]
        out[f"{dst}.attn.attn.in_proj_weight"] = sd[f"{src}.attn.qkv.weight"]
        out[f"{dst}.attn.attn.in_proj_bias"] = sd[f"{src}.attn.qkv.bias"]

    for i in range(model.config.depth):
        layer(f"encoder.blocks.{i}", f"backbone.layers.{i}")
    if model.config.decoder == "linear":
        w = sd["decoder.head.weight"]
        out["decode_head.conv_seg.weight"] = w.reshape(*w.shape, 1, 1).clone()
        out["decode_head.conv_seg.bias"] = sd["decoder.head.bias"]
        return out
    for i in range(model.config.decoder_depth):
        layer(f"decoder.blocks.{i}", f"decode_head.layers.{i}")
    out["decode_head.cls_emb"] = sd["decoder.cls_emb"]
    out["decode_head.dec_proj.weight"] = sd["decoder.proj_dec.weight"]
    out["decode_head.dec_proj.bias"] = sd["decoder.proj_dec.bias"]
    out["decode_head.patch_proj.weight"] = sd["decoder.proj_patch"].t().contiguous()
    out["decode_head.classes_proj.weight"] = sd["decoder.proj_classes"].t().contiguous()
    for p in ("weight", "bias"):
        out[f"decode_head.decoder_norm.{p}"] = sd[f"decoder.decoder_norm.{p}"]
        out[f"decode_head.mask_norm.{p}"] = sd[f"decoder.mask_norm.{p}"]
    return out


def mmseg_cfg_text(num_heads: int, dec_heads: int, img: int = SIZE, linear: bool = False) -> str:
    head = ("decode_head = dict(type='FCNHead', in_channels=128, channels=128, num_convs=0, "
            "concat_input=False, dropout_ratio=0.0, num_classes=5)" if linear else
            f"decode_head = dict(type='SegmenterMaskTransformerHead', in_channels=128, channels=128, "
            f"num_layers=2, num_heads={dec_heads}, embed_dims=128, dropout_ratio=0.0, num_classes=5)")
    return f"""
backbone_norm_cfg = dict(eps=1e-06, requires_grad=True, type='LN')
crop_size = (
    {img},
    {img},
)
{head}
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5],
                           bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=crop_size),
    backbone=dict(type='VisionTransformer', img_size=crop_size, patch_size=16, embed_dims=128, num_layers=2,
                  num_heads={num_heads}, drop_path_rate=0.1, final_norm=True, norm_cfg=backbone_norm_cfg,
                  with_cls_token=True, interpolate_mode='bicubic'),
    decode_head=decode_head,
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(48, 48)))
work_dir = './work_dirs/' + 'x'
"""


def write_mmseg(path: pathlib.Path, model, meta: dict | None = None, patch_bias: bool = False) -> pathlib.Path:
    torch.save({"meta": {} if meta is None else meta, "state_dict": to_mmseg_layout(model, patch_bias)}, path)
    return path


# ----------------------------------------------------------------- our own format


def test_save_load_roundtrip(tmp_path, images):
    model = make_model()
    path = save_segmenter(model, tmp_path / "sub" / "demo.pt")
    assert path == tmp_path / "sub" / "demo.pt"
    assert sorted(os.listdir(path.parent)) == ["demo.pt"]  # no temporary file left behind
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT_TAG and detect_format(raw) == "mpm"
    loaded = load_segmenter(path)
    assert loaded.config == model.config and not loaded.training
    assert_same_logits(model, loaded, images)
    # overwriting an existing file is atomic too
    other = make_model(seed=3)
    save_segmenter(other, path)
    assert sorted(os.listdir(path.parent)) == ["demo.pt"]
    assert_same_logits(other, load_segmenter(path), images)


def test_roundtrip_linear_and_merging(tmp_path, images):
    model = make_model(decoder="linear", encoder_norm_eps=1e-5, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    loaded = load_segmenter(save_segmenter(model, tmp_path / "lin.pt"))
    assert loaded.config == model.config
    assert torch.equal(loaded.pixel_mean.flatten(), torch.tensor(IMAGENET_MEAN))
    method = build_method("mpm", (0,))
    with torch.no_grad():
        torch.testing.assert_close(model(images, method=method, backend="sdpa"),
                                   loaded(images, method=method, backend="sdpa"))


def test_num_classes_check(tmp_path):
    path = save_segmenter(make_model(), tmp_path / "m.pt")
    assert load_segmenter(path, num_classes=K).num_classes == K
    with pytest.raises(CheckpointError, match=rf"{path.name}.*{K} classes, 150 were expected"):
        load_segmenter(path, num_classes=150)


# ----------------------------------------------------------------- Segmenter's format


@pytest.mark.parametrize("decoder", ["mask_transformer", "linear"])
def test_segmenter_format(tmp_path, images, decoder):
    model = make_model(seed=2, decoder=decoder, encoder_norm_eps=1e-5)
    path = write_segmenter(tmp_path / "seg", model, decoder=decoder)
    assert "!!python/tuple" in (tmp_path / "seg" / "variant.yml").read_text()
    loaded = load_segmenter(path)
    cfg = loaded.config
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.num_classes, cfg.image_size) == (DIM, DEPTH, 2, K, (64, 64))
    assert cfg.decoder == decoder and cfg.encoder_norm_eps == 1e-5 and cfg.decoder_norm_eps == 1e-5
    assert cfg.mean == cfg.std == (127.5, 127.5, 127.5)
    assert_same_logits(model, loaded, images)
    # the folder works too
    assert_same_logits(model, load_segmenter(tmp_path / "seg"), images)


def test_segmenter_variant_elsewhere_and_deit(tmp_path, images):
    model = make_model(seed=4, encoder_norm_eps=1e-5)
    folder = tmp_path / "ckpt"
    path = write_segmenter(folder, model, normalization="deit")
    moved = tmp_path / "elsewhere.yml"
    (folder / "variant.yml").rename(moved)
    with pytest.raises(CheckpointError) as err:
        load_segmenter(path)
    assert str(path) in str(err.value) and str(folder / "variant.yml") in str(err.value)
    loaded = load_segmenter(path, variant=moved)
    assert loaded.config.mean == pytest.approx(IMAGENET_MEAN) and loaded.config.std == pytest.approx(IMAGENET_STD)
    assert_same_logits(model, loaded, images)
    as_dict = read_variant(moved)
    assert isinstance(as_dict["net_kwargs"]["image_size"], tuple)
    assert_same_logits(model, load_segmenter(path, variant=as_dict), images)


def test_segmenter_variant_config():
    variant = segmenter_variant(SegmenterConfig.preset("B", num_classes=150))
    cfg = config_from_segmenter_variant(variant)
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_ratio) == (768, 12, 12, 4.0)
    assert (cfg.decoder_dim, cfg.decoder_heads, cfg.decoder_mlp_dim, cfg.decoder_depth) == (768, 12, 3072, 2)
    assert cfg.image_size == (512, 512) and cfg.num_classes == 150
    # net_kwargs alone, no n_cls anywhere: the class count comes from num_classes
    net = dict(variant["net_kwargs"])
    del net["n_cls"], net["decoder"]["n_cls"]
    assert config_from_segmenter_variant(net, num_classes=150).num_classes == 150
    with pytest.raises(CheckpointError, match="n_cls"):
        config_from_segmenter_variant(net)
    with pytest.raises(CheckpointError, match="distilled"):
        config_from_segmenter_variant({**variant["net_kwargs"], "distilled": True})
    with pytest.raises(CheckpointError, match="normalization"):
        config_from_segmenter_variant({**variant["net_kwargs"], "normalization": "clip"})
    with pytest.raises(CheckpointError, match="d_model"):
        config_from_segmenter_variant({k: v for k, v in variant["net_kwargs"].items() if k != "d_model"})


def test_segmenter_state_dict_conversion():
    model = make_model()
    sd = to_segmenter_layout(model)
    out = convert_segmenter_state_dict(sd)
    assert set(out) == set(model.state_dict())
    with pytest.raises(CheckpointError, match="encoder.dist_token"):
        convert_segmenter_state_dict({**sd, "encoder.dist_token": torch.zeros(1, 1, DIM)})
    with pytest.raises(CheckpointError, match="'optimizer.step'"):
        convert_segmenter_state_dict({**sd, "optimizer.step": torch.zeros(1)})


def test_segmenter_wrong_variant_shape(tmp_path):
    model = make_model(encoder_norm_eps=1e-5)
    variant = segmenter_variant(model.config)
    variant["net_kwargs"]["image_size"] = (96, 96)
    path = write_segmenter(tmp_path / "s", model, variant=variant)
    with pytest.raises(CheckpointError) as err:
        load_segmenter(path)
    msg = str(err.value)
    assert str(path) in msg and "'encoder.pos_embed'" in msg and "(1, 37, 128)" in msg and "(1, 17, 128)" in msg


# ----------------------------------------------------------------- mmsegmentation's format


def test_mmseg_format_without_meta(tmp_path, images):
    model = make_model(seed=5)
    with torch.no_grad():  # mmseg's Segmenter configs have no patch-embedding bias
        model.encoder.patch_embed.proj.bias.zero_()
    path = write_mmseg(tmp_path / "seg.pth", model)
    loaded = load_segmenter(path)
    cfg = loaded.config
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.decoder_heads, cfg.num_classes) == (DIM, DEPTH, 2, 2, K)
    assert cfg.encoder_norm_eps == 1e-6 and cfg.decoder_norm_eps == 1e-5 and cfg.image_size == (SIZE, SIZE)
    assert_same_logits(model, loaded, images)


def test_mmseg_format_with_meta_heads(tmp_path, images):
    """Heads cannot be read from shapes: the config text in meta gives them."""
    model = make_model(seed=6, num_heads=4, decoder_heads=8)
    meta = {"cfg": mmseg_cfg_text(4, 8), "mmengine_version": "0.10.4", "seed": 0,
            "dataset_meta": {"classes": tuple("abcde"), "palette": [[0, 0, 0]] * 5},
            "work_dir": pathlib.PurePosixPath("/work_dirs/x")}  # not loadable with weights_only=True
    path = write_mmseg(tmp_path / "seg.pth", model, meta, patch_bias=True)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    loaded = load_segmenter(path)
    assert (loaded.config.num_heads, loaded.config.decoder_heads) == (4, 8)
    assert_same_logits(model, loaded, images)
    # without the meta the heads default to width // 64 and the logits differ
    plain = load_segmenter(write_mmseg(tmp_path / "plain.pth", model, patch_bias=True))
    assert plain.config.num_heads == 2
    assert not torch.allclose(logits(plain, images), logits(model, images), atol=1e-3)


def test_mmseg_linear_format(tmp_path, images):
    model = make_model(seed=7, decoder="linear")
    meta = {"config": mmseg_cfg_text(2, 2, linear=True)}  # mmseg 0.x stores the text under "config"
    loaded = load_segmenter(write_mmseg(tmp_path / "lin.pth", model, meta, patch_bias=True))
    assert loaded.config.decoder == "linear" and loaded.num_classes == K
    assert_same_logits(model, loaded, images)


def test_mmseg_config_inference():
    big = build_segmenter(SegmenterConfig.preset("S", num_classes=150, image_size=(512, 512)))
    sd = {k: v for k, v in to_mmseg_layout(big).items()}
    cfg = config_from_mmseg(sd)
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_ratio, cfg.patch_size) == (384, 12, 6, 4.0, 16)
    assert (cfg.decoder_dim, cfg.decoder_heads, cfg.decoder_mlp_dim, cfg.decoder_depth) == (384, 6, 1536, 2)
    assert cfg.image_size == (512, 512) and cfg.num_classes == 150
    assert cfg.encoder_norm_eps == 1e-6 and cfg.decoder_norm_eps == 1e-5
    out = convert_mmseg_state_dict(sd)
    assert set(out) == set(big.state_dict())
    assert torch.equal(out["encoder.patch_embed.proj.bias"], torch.zeros(384))
    assert torch.equal(out["decoder.proj_patch"], big.decoder.proj_patch)
    # a non-square training size comes from the config's img_size
    meta = {"cfg": "model = dict(backbone=dict(img_size=(32, 96), num_heads=6))"}
    sd2 = dict(sd, **{"backbone.pos_embed": torch.zeros(1, 1 + 2 * 6, 384)})
    assert config_from_mmseg(sd2, meta).image_size == (32, 96)
    with pytest.raises(CheckpointError, match="square grid"):
        config_from_mmseg(sd2)
    with pytest.raises(CheckpointError, match="not supported"):
        config_from_mmseg(sd, {"cfg": "model = dict(backbone=dict(type='MixVisionTransformer'))"})


def test_parse_config_text_is_safe(tmp_path):
    marker = tmp_path / "executed"
    text = f"""
import os
eps = 1e-06
norm = dict(type='LN', eps=eps, requires_grad=True)
size = (512, 512)
model = dict(backbone=dict(norm_cfg=norm, img_size=size, num_heads=-(-3), act=dict(**norm)),
             strange=os.getcwd(), items=[1, 'a', None, True])
boom = __import__('os').mkdir({str(marker)!r})
"""
    env = parse_config_text(text)
    assert not marker.exists()
    assert "boom" not in env
    assert env["model"] == {"backbone": {"norm_cfg": {"type": "LN", "eps": 1e-6, "requires_grad": True},
                                         "img_size": (512, 512), "num_heads": 3,
                                         "act": {"type": "LN", "eps": 1e-6, "requires_grad": True}},
                            "items": [1, "a", None, True]}
    assert parse_config_text("this is ( not python") == {}


# ----------------------------------------------------------------- errors


def test_random_bytes(tmp_path):
    path = tmp_path / "garbage.pth"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match=str(path)):
        load_segmenter(path)


def test_truncated_file(tmp_path):
    full = save_segmenter(make_model(), tmp_path / "full.pt").read_bytes()
    for frac in (0.5, 0.99):
        path = tmp_path / f"cut{frac}.pt"
        path.write_bytes(full[: int(len(full) * frac)])
        with pytest.raises(CheckpointError, match=str(path)):
            load_segmenter(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_segmenter(tmp_path / "nope.pth")


def test_unknown_format(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"weights": {"fc.weight": torch.zeros(2, 2)}, "step": 3}, path)
    with pytest.raises(CheckpointError) as err:
        load_segmenter(path)
    assert str(path) in str(err.value) and "not a recognised" in str(err.value) and "'weights'" in str(err.value)
    path2 = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path2)
    with pytest.raises(CheckpointError, match="not a recognised"):
        load_segmenter(path2)


class _Evil:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_unknown_pickle_is_not_executed(tmp_path):
    """A file of no known layout is never unpickled with weights_only=False."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"payload": _Evil(str(marker)), "weights": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="not a recognised"):
        load_segmenter(path)
    assert not marker.exists()


def test_missing_key(tmp_path):
    model = make_model()
    sd = to_mmseg_layout(model)
    del sd["backbone.layers.1.ln2.bias"]
    path = tmp_path / "missing.pth"
    torch.save({"meta": {}, "state_dict": sd}, path)
    with pytest.raises(CheckpointError) as err:
        load_segmenter(path)
    msg = str(err.value)
    assert str(path) in msg and "missing key 'backbone.layers.1.ln2.bias'" in msg and "(128,)" in msg


def test_missing_key_needed_for_config(tmp_path):
    sd = to_mmseg_layout(make_model())
    del sd["backbone.pos_embed"]
    path = tmp_path / "nopos.pth"
    torch.save({"meta": {}, "state_dict": sd}, path)
    with pytest.raises(CheckpointError, match=rf"{path.name}.*'backbone.pos_embed'"):
        load_segmenter(path)


def test_wrong_shape(tmp_path):
    sd = to_mmseg_layout(make_model())
    sd["decode_head.decoder_norm.weight"] = torch.ones(DIM + 1)
    path = tmp_path / "shape.pth"
    torch.save({"meta": {}, "state_dict": sd}, path)
    with pytest.raises(CheckpointError) as err:
        load_segmenter(path)
    msg = str(err.value)
    assert str(path) in msg and "'decode_head.decoder_norm.weight'" in msg
    assert "expected (128,)" in msg and "found (129,)" in msg


def test_wrong_shape_own_format(tmp_path):
    model = make_model()
    path = save_segmenter(model, tmp_path / "m.pt")
    raw = torch.load(path, weights_only=True)
    raw["state_dict"]["encoder.blocks.1.mlp.fc1.weight"] = torch.zeros(3, 3)
    torch.save(raw, path)
    with pytest.raises(CheckpointError) as err:
        load_segmenter(path)
    msg = str(err.value)
    assert str(path) in msg and "'encoder.blocks.1.mlp.fc1.weight'" in msg and "(512, 128)" in msg and "(3, 3)" in msg


def test_unexpected_key(tmp_path):
    sd = to_mmseg_layout(make_model())
    sd["backbone.pre_ln.weight"] = torch.ones(DIM)
    path = tmp_path / "extra.pth"
    torch.save({"meta": {}, "state_dict": sd}, path)
    with pytest.raises(CheckpointError) as err:
        load_segmenter(path)
    assert str(path) in str(err.value) and "unexpected key 'backbone.pre_ln.weight'" in str(err.value)
    # an auxiliary head (training only) is dropped silently
    sd.pop("backbone.pre_ln.weight")
    sd["auxiliary_head.conv_seg.weight"] = torch.zeros(K, DIM, 1, 1)
    torch.save({"meta": {}, "state_dict": sd}, path)
    assert load_segmenter(path).num_classes == K


def test_bad_own_config(tmp_path):
    model = make_model()
    path = save_segmenter(model, tmp_path / "m.pt")
    raw = torch.load(path, weights_only=True)
    raw["config"] = {**raw["config"], "colour": "blue"}
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match=rf"{path.name}.*colour"):
        load_segmenter(path)


def test_config_dataclass_is_complete():
    """save_segmenter stores every field; a new field must keep a default to stay loadable."""
    missing = [f.name for f in dataclasses.fields(SegmenterConfig)
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    assert missing == ["num_classes"]
