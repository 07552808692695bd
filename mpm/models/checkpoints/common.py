"""What the checkpoint formats share: normalisation constants, the state-dict type, small helpers."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from mpm.errors import CheckpointError

#: ImageNet statistics on the 0..255 scale (Segmenter's "deit" normalisation)
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
_VIT_MEAN = (127.5, 127.5, 127.5)

StateDict = dict[str, Tensor]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _pair(value: Any, what: str) -> tuple[int, int]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value), int(value)
    if isinstance(value, (list, tuple)) and len(value) == 1:
        return int(value[0]), int(value[0])
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1])
    raise CheckpointError(f"{what}: expected an int or a pair, found {value!r}")
