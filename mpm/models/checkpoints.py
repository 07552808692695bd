"""Load Segmenter checkpoints of three formats into :class:`~mpm.models.segmenter.Segmenter`.

==============  ==========================================================================
format          what the file holds
==============  ==========================================================================
``segmenter``   Strudel et al.'s own ``checkpoint.pth``: ``{"model": state_dict, ...}``
                with ``encoder.*`` / ``decoder.*`` keys, plus a ``variant.yml`` beside it
                that fixes the architecture (``net_kwargs``).
``mmseg``       an mmsegmentation (0.x or 1.x) Segmenter checkpoint:
                ``{"meta": {...}, "state_dict": {"backbone.*", "decode_head.*"}}``; the
                architecture is read from the tensor shapes and, where present, from the
                config text mmseg stores in ``meta`` (``"cfg"`` / ``"config"``).
``mpm``         what :func:`save_segmenter` writes:
                ``{"format": "mpm-segmenter", "config": SegmenterConfig.to_dict(),
                "state_dict": ...}`` (the offline demo model is stored this way).
==============  ==========================================================================

:func:`load_segmenter` tells the formats apart by itself. The conversions are pure
functions on state dicts (:func:`convert_segmenter_state_dict`,
:func:`convert_mmseg_state_dict`) and on metadata (:func:`config_from_segmenter_variant`,
:func:`config_from_mmseg`), so they can be used and tested without files.

Every problem (unreadable or truncated file, unknown format, missing ``variant.yml``,
missing or unexpected key, shape mismatch) raises :class:`~mpm.errors.CheckpointError`
whose message names the file and the first offending key.

Security: files are first read with ``torch.load(weights_only=True)``, which runs no
code. mmsegmentation checkpoints usually hold non-tensor objects in ``meta`` that this
safe loader refuses; for such a file, and only when a look at its pickle opcodes (which
executes nothing) shows one of the three known layouts, it is read again with
``weights_only=False``, which **executes arbitrary pickle code**. Only load
checkpoint files from sources you trust.
"""

from __future__ import annotations

import ast
import io
import math
import os
import pickle
import pickletools
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from torch import Tensor

from mpm.io import write_bytes_atomic
from mpm.errors import CheckpointError, ConfigError
from mpm.models.segmenter import Segmenter, SegmenterConfig

__all__ = [
    "FORMAT_TAG",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "config_from_mmseg",
    "config_from_segmenter_variant",
    "convert_mmseg_state_dict",
    "convert_segmenter_state_dict",
    "detect_format",
    "load_segmenter",
    "mmseg_key",
    "parse_config_text",
    "read_variant",
    "save_segmenter",
]

#: value of the ``"format"`` entry of files written by :func:`save_segmenter`
FORMAT_TAG = "mpm-segmenter"
#: ImageNet statistics on the 0..255 scale (Segmenter's "deit" normalisation)
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
_VIT_MEAN = (127.5, 127.5, 127.5)

StateDict = dict[str, Tensor]


# --------------------------------------------------------------------------- saving


def save_segmenter(model: Segmenter, path: str | os.PathLike) -> Path:
    """Write ``model`` (config + weights) to ``path`` atomically; returns the path.

    The file is written beside the target under a temporary name and renamed onto it,
    so a reader never sees a half-written checkpoint. It loads back with
    :func:`load_segmenter` (under ``weights_only=True``: it holds only tensors and
    plain Python values).
    """
    path = Path(path)
    payload = {
        "format": FORMAT_TAG,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    buf = io.BytesIO()  # saved from memory: the archive's inner names do not depend on a temp file name
    torch.save(payload, buf)
    return write_bytes_atomic(path, buf.getvalue())


# --------------------------------------------------------------------------- loading


def load_segmenter(
    path: str | os.PathLike,
    *,
    variant: str | os.PathLike | Mapping | None = None,
    num_classes: int | None = None,
    map_location: Any = "cpu",
) -> Segmenter:
    """Load a Segmenter checkpoint of any supported format (see the module docstring).

    Args:
        path: the checkpoint file (or a folder holding Segmenter's ``checkpoint.pth``).
        variant: for Segmenter's own format, the ``variant.yml`` to use (a path or the
            already loaded mapping); default: ``variant.yml`` beside the checkpoint.
        num_classes: the number of classes the caller expects; a checkpoint with
            another number raises :class:`CheckpointError`.
        map_location: passed to ``torch.load``; a device (string) also moves the model.
    Returns:
        the model in eval mode.
    Raises:
        CheckpointError: naming the file and the first offending key.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pth"
    obj = _torch_load(path, map_location)
    try:
        fmt = detect_format(obj)
        if fmt == "mpm":
            config, state_dict = _mpm_config(obj), dict(obj["state_dict"])
            source_name: Callable[[str], str] = _same_name
        elif fmt == "segmenter":
            var = variant if isinstance(variant, Mapping) else read_variant(
                Path(variant) if variant is not None else path.parent / "variant.yml")
            raw = obj["model"]
            config = config_from_segmenter_variant(var, state_dict=raw)
            state_dict = convert_segmenter_state_dict(raw)
            source_name = _same_name
        else:
            raw = obj["state_dict"]
            config = config_from_mmseg(raw, obj.get("meta"))
            state_dict = convert_mmseg_state_dict(raw)
            source_name = mmseg_key
        if num_classes is not None and config.num_classes != num_classes:
            raise CheckpointError(
                f"the checkpoint has {config.num_classes} classes, {num_classes} were expected")
        try:
            model = Segmenter(config)
        except (ConfigError, ValueError, AssertionError) as err:
            raise CheckpointError(f"cannot build the model it describes: {err}") from None
        _load_checked(model, state_dict, source_name)
    except (CheckpointError, ConfigError) as err:
        raise CheckpointError(f"{path}: {err}") from None
    if isinstance(map_location, (str, torch.device)):
        model = model.to(map_location)
    return model.eval()


def detect_format(obj: Any) -> str:
    """``"mpm"``, ``"segmenter"`` or ``"mmseg"`` for a loaded checkpoint object.

    Raises:
        CheckpointError: for anything else (the message lists the top-level keys).
    """
    if isinstance(obj, Mapping):
        if obj.get("format") == FORMAT_TAG:
            return "mpm"
        sd = obj.get("state_dict")
        if isinstance(sd, Mapping) and any(str(k).startswith(("backbone.", "decode_head.")) for k in sd):
            return "mmseg"
        sd = obj.get("model")
        if isinstance(sd, Mapping) and any(str(k).startswith(("encoder.", "decoder.")) for k in sd):
            return "segmenter"
        keys = [str(k) for k in list(obj)[:8]]
        what = f"a mapping with top-level keys {keys}"
    else:
        what = f"a {type(obj).__name__}"
    raise CheckpointError(
        f"not a recognised Segmenter checkpoint: found {what}; expected Segmenter's "
        "{'model': {'encoder.*', 'decoder.*'}}, mmsegmentation's "
        "{'state_dict': {'backbone.*', 'decode_head.*'}, 'meta'} or "
        f"{{'format': {FORMAT_TAG!r}, 'config', 'state_dict'}}")


def _mpm_config(obj: Mapping) -> SegmenterConfig:
    cfg = obj.get("config")
    if not isinstance(cfg, Mapping):
        raise CheckpointError("the 'config' entry is missing or not a mapping")
    if not isinstance(obj.get("state_dict"), Mapping):
        raise CheckpointError("the 'state_dict' entry is missing or not a mapping")
    try:
        return SegmenterConfig.from_dict(dict(cfg))
    except (ConfigError, TypeError, ValueError) as err:
        raise CheckpointError(f"bad 'config' entry: {err}") from None


def _torch_load(path: Path, map_location: Any) -> Any:
    """``torch.load`` with ``weights_only=True``, falling back (known formats only) to False."""
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        refusal = _refusal_reason(err)
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError, EOFError, ... on bad files
        raise CheckpointError(
            f"{path}: cannot read the file as a PyTorch checkpoint (truncated or corrupt?): "
            f"{type(err).__name__}: {_first_line(err)}") from None
    if not _looks_like_torch_file(path):
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    fmt = _sniff_format(path)
    if fmt is None:
        raise CheckpointError(
            f"{path}: not a recognised Segmenter checkpoint: its pickle shows none of the known "
            f"layouts and holds objects the safe loader refuses ({refusal})")
    try:
        # The file looks like a known format but holds objects other than tensors and
        # plain values (mmseg's meta): this executes its pickle code. Trusted files only.
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(
            f"{path}: cannot load this {fmt} checkpoint: {type(err).__name__}: {_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _refusal_reason(err: BaseException) -> str:
    """The informative line of torch's weights-only refusal (it starts with advice)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for line in lines:
        if "unsupported" in line.lower():
            return line
    advice = ("Weights only load failed", "Please file an issue", "Check the documentation")
    rest = [line for line in lines if not line.startswith(advice)]
    return (rest or lines or [type(err).__name__])[0]


def _looks_like_torch_file(path: Path) -> bool:
    """A zip archive (torch >= 1.6) or a pickle with a protocol header (legacy format)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK") or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def _pickle_strings(path: Path) -> set[str] | None:
    """The string constants of a checkpoint's pickle, found without executing it."""
    strings: set[str] = set()

    def scan(stream: Any) -> None:
        for _op, arg, _pos in pickletools.genops(stream):
            if isinstance(arg, str):
                strings.add(arg)

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
                if not names:
                    return None
                scan(io.BytesIO(zf.read(names[0])))
        else:  # legacy format: magic number, protocol, sys info, then the object
            with open(path, "rb") as f:
                for _ in range(4):
                    scan(f)
    except Exception:  # noqa: BLE001 - anything unparsable is simply not a known format
        return strings or None
    return strings


def _sniff_format(path: Path) -> str | None:
    strings = _pickle_strings(path)
    if not strings:
        return None
    if FORMAT_TAG in strings and "state_dict" in strings:
        return "mpm"
    if "state_dict" in strings and any(s.startswith("backbone.") for s in strings) and any(
            s.startswith("decode_head.") for s in strings):
        return "mmseg"
    if "model" in strings and "encoder.patch_embed.proj.weight" in strings:
        return "segmenter"
    return None


def _load_checked(model: Segmenter, state_dict: Mapping[str, Tensor],
                  source_name: Callable[[str], str]) -> None:
    """``load_state_dict(strict=True)`` with a message naming the first offending key."""
    expected = model.state_dict()
    problems: list[str] = []
    for key, ref in expected.items():
        name = _describe(key, source_name)
        if key not in state_dict:
            problems.append(f"missing key {name} (expected shape {tuple(ref.shape)})")
            continue
        value = state_dict[key]
        if not isinstance(value, Tensor):
            problems.append(f"key {name} holds a {type(value).__name__}, not a tensor")
        elif tuple(value.shape) != tuple(ref.shape):
            problems.append(f"shape mismatch at key {name}: expected {tuple(ref.shape)} (from the "
                            f"model configuration), found {tuple(value.shape)}")
    for key in state_dict:
        if key not in expected:
            problems.append(f"unexpected key {_describe(key, source_name)}")
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise CheckpointError(problems[0] + more)
    model.load_state_dict(state_dict, strict=True)


def _same_name(key: str) -> str:
    return key


def _describe(key: str, source_name: Callable[[str], str]) -> str:
    src = source_name(key)
    return repr(key) if src == key else f"{src!r} (mpm key {key!r})"


# --------------------------------------------------------------------------- Segmenter


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


# --------------------------------------------------------------------------- mmsegmentation

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
    model_cfg = cfg.get("model") if isinstance(cfg.get("model"), Mapping) else {}
    bb = model_cfg.get("backbone") if isinstance(model_cfg.get("backbone"), Mapping) else {}
    head = model_cfg.get("decode_head") if isinstance(model_cfg.get("decode_head"), Mapping) else {}

    def need(key: str, ndim: int, why: str) -> Tensor:
        if key not in state_dict:
            raise CheckpointError(f"missing key {key!r} (needed to infer {why})")
        value = state_dict[key]
        if not isinstance(value, Tensor) or value.dim() != ndim:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise CheckpointError(f"key {key!r}: expected a {ndim}-d tensor, found {shape}")
        return value

    if bb.get("type", "VisionTransformer") != "VisionTransformer":
        raise CheckpointError(f"backbone type {bb.get('type')!r} is not supported (VisionTransformer only)")
    if bb.get("with_cls_token", True) is not True:
        raise CheckpointError("backbone with_cls_token=False is not supported")
    for key, value in (("act_cfg", bb.get("act_cfg")), ("decode_head.act_cfg", head.get("act_cfg"))):
        if isinstance(value, Mapping) and value.get("type", "GELU") != "GELU":
            raise CheckpointError(f"{key} {value.get('type')!r} is not supported (GELU only)")

    proj = need("backbone.patch_embed.projection.weight", 4, "the width and patch size")
    dim, patch = int(proj.shape[0]), int(proj.shape[-1])
    if proj.shape[-2] != patch:
        raise CheckpointError(f"key 'backbone.patch_embed.projection.weight': non-square patches "
                              f"{tuple(proj.shape[-2:])} are not supported")
    depth = _count_layers(state_dict, "backbone.layers.")
    if depth == 0:
        raise CheckpointError("missing key 'backbone.layers.0.ln1.weight' (no transformer layers found)")
    heads = int(bb.get("num_heads") or max(dim // 64, 1))
    hidden = need("backbone.layers.0.ffn.layers.0.0.weight", 2, "the MLP width").shape[0]
    pos = need("backbone.pos_embed", 3, "the training image size")
    image_size = _mmseg_image_size(int(pos.shape[1]) - 1, patch, bb.get("img_size"))
    enc_eps = _norm_eps(bb.get("norm_cfg"), 1e-6 if not bb else 1e-5)
    mean, std = _mmseg_normalisation(cfg, model_cfg)
    common = dict(embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=hidden / dim, patch_size=patch,
                  image_size=image_size, encoder_norm_eps=enc_eps, mean=mean, std=std)

    if "decode_head.cls_emb" in state_dict:
        if head.get("type", "SegmenterMaskTransformerHead") != "SegmenterMaskTransformerHead":
            raise CheckpointError(f"decode_head type {head.get('type')!r} does not match the mask-transformer keys")
        cls_emb = need("decode_head.cls_emb", 3, "the number of classes")
        k, dec_dim = int(cls_emb.shape[1]), int(cls_emb.shape[2])
        dec_depth = _count_layers(state_dict, "decode_head.layers.")
        dec_hidden = need("decode_head.layers.0.ffn.layers.0.0.weight", 2, "the decoder MLP width").shape[0] \
            if dec_depth else 4 * dec_dim
        config_kw = dict(decoder="mask_transformer", decoder_depth=dec_depth, decoder_dim=dec_dim,
                         decoder_heads=int(head.get("num_heads") or max(dec_dim // 64, 1)),
                         decoder_mlp_dim=int(dec_hidden), decoder_norm_eps=_norm_eps(head.get("norm_cfg"), 1e-5))
    elif "decode_head.conv_seg.weight" in state_dict:
        if head.get("num_convs", 0) != 0:
            raise CheckpointError(f"decode_head num_convs={head.get('num_convs')} is not supported "
                                  "(Segmenter's linear decoder is FCNHead with num_convs=0)")
        k = int(need("decode_head.conv_seg.weight", 4, "the number of classes").shape[0])
        config_kw = dict(decoder="linear")
    else:
        raise CheckpointError("missing key 'decode_head.cls_emb' (mask transformer) or "
                              "'decode_head.conv_seg.weight' (linear decoder)")
    if num_classes is not None and k != num_classes:
        raise CheckpointError(f"the checkpoint has {k} classes, {num_classes} were expected")
    try:
        return SegmenterConfig(num_classes=k, **common, **config_kw)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"cannot describe this checkpoint: {err}") from None


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


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class _Unsupported(Exception):
    pass


def parse_config_text(text: str) -> dict:
    """Top-level assignments of an mmengine/mmcv config text, evaluated *without* running it.

    Only literals, ``dict(...)`` calls, containers and names assigned earlier are
    understood; entries using anything else are left out.
    """
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return {}
    env: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                env[node.targets[0].id] = _literal(node.value, env)
            except _Unsupported:
                pass
    return env


def _literal(node: ast.AST, env: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List)):
        items = [_literal(e, env) for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    if isinstance(node, ast.Dict):
        out = {}
        for k, v in zip(node.keys, node.values):
            if k is None:
                raise _Unsupported
            try:
                out[_literal(k, env)] = _literal(v, env)
            except _Unsupported:
                pass
        return out
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        out = {}
        for kw in node.keywords:
            try:
                value = _literal(kw.value, env)
            except _Unsupported:
                continue
            if kw.arg is None:
                if isinstance(value, Mapping):
                    out.update(value)
            else:
                out[kw.arg] = value
        return out
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand, env)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Name) and node.id in env:
        return env[node.id]
    raise _Unsupported


# --------------------------------------------------------------------------- helpers


def _pair(value: Any, what: str) -> tuple[int, int]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value), int(value)
    if isinstance(value, (list, tuple)) and len(value) == 1:
        return int(value[0]), int(value[0])
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1])
    raise CheckpointError(f"{what}: expected an int or a pair, found {value!r}")
