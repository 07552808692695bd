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

Modules: :mod:`~mpm.models.checkpoints.native` (mpm's own format: saving, loading any format,
telling formats apart, the safe ``torch.load``), :mod:`~mpm.models.checkpoints.segmenter_format`
(Segmenter's ``checkpoint.pth`` + ``variant.yml``), :mod:`~mpm.models.checkpoints.mmseg_format`
(mmsegmentation checkpoints), :mod:`~mpm.models.checkpoints.config_text` (mmengine/mmcv config
texts parsed without running them) and :mod:`~mpm.models.checkpoints.common` (normalisation
constants, small helpers).
"""

from mpm.models.checkpoints.common import IMAGENET_MEAN, IMAGENET_STD
from mpm.models.checkpoints.config_text import parse_config_text
from mpm.models.checkpoints.mmseg_format import config_from_mmseg, convert_mmseg_state_dict, mmseg_key
from mpm.models.checkpoints.native import FORMAT_TAG, detect_format, load_segmenter, save_segmenter
from mpm.models.checkpoints.segmenter_format import (
    config_from_segmenter_variant,
    convert_segmenter_state_dict,
    read_variant,
)

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
