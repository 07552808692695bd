"""COCO run-length encoding, decoded and encoded in pure numpy.

Masks are stored column-major (Fortran order) as alternating runs of 0s and 1s, the
first run counting zeros. ``counts`` is either a list of ints (uncompressed RLE) or
COCO's compressed string: each run is a variable-length integer in 5-bit groups,
offset by 48 into printable ASCII, bit 0x20 meaning "more groups follow", bit 0x10
of the last group the sign; runs after the second are stored as differences to the
run two places before (pycocotools' ``rleToString``/``rleFrString``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mpm.errors import DatasetError


def string_to_counts(text: str) -> list[int]:
    """Decode a compressed COCO counts string into run lengths (vectorised)."""
    try:
        codes = np.frombuffer(text.encode("ascii"), np.uint8).astype(np.int64) - 48
    except UnicodeEncodeError:
        raise DatasetError("invalid character in RLE counts string") from None
    if codes.size == 0:
        return []
    if codes.min() < 0 or codes.max() > 63:
        raise DatasetError("invalid character in RLE counts string")
    ends = np.flatnonzero((codes & 0x20) == 0)  # last group of each number
    if ends.size == 0 or ends[-1] != codes.size - 1:
        raise DatasetError("truncated RLE counts string")
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    shift = 5 * (np.arange(codes.size) - np.repeat(starts, lengths))
    values = np.add.reduceat((codes & 0x1F) << shift, starts)
    negative = (codes[ends] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * lengths[negative])
    # runs after the second are stored as differences to the run two places before
    values[1::2] = np.cumsum(values[1::2])
    values[2::2] = np.cumsum(values[2::2])
    return values.tolist()


def counts_to_string(counts: Sequence[int]) -> str:
    """Encode run lengths as a compressed COCO counts string."""
    out = []
    for i, count in enumerate(counts):
        value = int(count) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            code = value & 0x1F
            value >>= 5
            more = not ((code & 0x10) == 0 and value == 0) and not ((code & 0x10) != 0 and value == -1)
            if more:
                code |= 0x20
            out.append(chr(code + 48))
    return "".join(out)


def decode(rle: Mapping) -> np.ndarray:
    """A COCO RLE dict (``{"size": [h, w], "counts": …}``) as a uint8 (h, w) 0/1 mask."""
    try:
        height, width = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError):
        keys = sorted(rle) if isinstance(rle, Mapping) else rle
        raise DatasetError(f"malformed RLE segmentation (keys: {keys!r})") from None
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    runs = np.asarray(string_to_counts(counts) if isinstance(counts, str) else counts, dtype=np.int64)
    if (runs < 0).any() or runs.sum() != height * width:
        raise DatasetError(f"RLE runs sum to {int(runs.sum())}, mask is {height}x{width}={height * width}")
    values = (np.arange(len(runs)) % 2).astype(np.uint8)
    flat = np.repeat(values, runs)
    return flat.reshape(width, height).T.copy()


def encode(mask: np.ndarray) -> dict:
    """A 2-D mask (nonzero = 1) as a COCO compressed RLE dict."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError("encode expects a 2-D mask")
    height, width = mask.shape
    flat = (mask.T.reshape(-1) != 0).astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        runs = [0] + runs
    return {"size": [height, width], "counts": counts_to_string(runs)}
