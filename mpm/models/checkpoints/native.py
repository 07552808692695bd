"""mpm's own checkpoint format (:func:`save_segmenter`), and :func:`load_segmenter` for every format.

:func:`detect_format` tells the formats apart from a loaded object; files are read with
``torch.load(weights_only=True)`` first (see :mod:`mpm.models.checkpoints` on security).
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from mpm.io import write_bytes_atomic
from mpm.errors import CheckpointError, ConfigError
from mpm.models.checkpoints.common import _first_line
from mpm.models.checkpoints.mmseg_format import config_from_mmseg, convert_mmseg_state_dict, mmseg_key
from mpm.models.checkpoints.segmenter_format import (
    config_from_segmenter_variant,
    convert_segmenter_state_dict,
    read_variant,
)
from mpm.models.segmenter import Segmenter, SegmenterConfig

#: value of the ``"format"`` entry of files written by :func:`save_segmenter`
FORMAT_TAG = "mpm-segmenter"


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
