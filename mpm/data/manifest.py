"""Manifests: the JSON record of a prepared split that later stages read.

One file per split, ``ROOT/manifests/{dataset}-{split}.json``, written atomically. It
lists every (image, label) pair by path relative to ROOT with the sha256 of both
files, and the label space (class names, ignore index, ``reduce_zero_label``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from mpm.io import write_json_atomic, write_text_atomic
from mpm.data.specs import DatasetSpec
from mpm.errors import DatasetError

MANIFEST_DIR = "manifests"
FORMAT = "mpm-manifest"
VERSION = 1
_SHOWN_BAD = 20


def manifest_path(root: str | os.PathLike, dataset: str, split: str) -> Path:
    """Where the manifest of ``dataset``/``split`` lives under ``root``."""
    return Path(root) / MANIFEST_DIR / f"{dataset}-{split}.json"


def size_mismatch(image: str | os.PathLike, image_wh: Sequence[int], label: str | os.PathLike,
                  label_wh: Sequence[int]) -> str:
    """The message for an image and label of different sizes, naming both files."""
    return (f"size mismatch: image {image} is {image_wh[0]}x{image_wh[1]}, "
            f"label {label} is {label_wh[0]}x{label_wh[1]}")


def _read_checked(path: Path) -> tuple[bytes | None, tuple[int, int] | None, str | None]:
    """(bytes, (w, h), problem) for one image or label file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, None, f"missing: {path}"
    except OSError as err:
        return None, None, f"unreadable: {path} ({err.strerror or err})"
    try:
        with Image.open(io.BytesIO(data)) as img:
            size = img.size
            img.verify()
    except Exception as err:  # PIL raises many types for corrupt files
        return None, None, f"unreadable: {path} ({type(err).__name__}: {err})"
    return data, size, None


def check_pair(root: Path, image: str, label: str) -> tuple[dict | None, list[str]]:
    """Hash and sanity-check one (image, label) pair given relative to ``root``."""
    problems: list[str] = []
    img_bytes, img_size, problem = _read_checked(root / image)
    if problem:
        problems.append(problem)
    lbl_bytes, lbl_size, problem = _read_checked(root / label)
    if problem:
        problems.append(problem)
    if problems:
        return None, problems
    if img_size != lbl_size:
        return None, [size_mismatch(root / image, img_size, root / label, lbl_size)]
    entry = {
        "image": image, "label": label,
        "width": img_size[0], "height": img_size[1],
        "image_sha256": hashlib.sha256(img_bytes).hexdigest(),
        "label_sha256": hashlib.sha256(lbl_bytes).hexdigest(),
    }
    return entry, []


def build_manifest(
    root: str | os.PathLike,
    spec: DatasetSpec,
    split: str,
    pairs: Sequence[tuple[str, str]],
    *,
    source_split: str | None = None,
    class_names: Sequence[str] | None = None,
    synthetic: bool = False,
    extra: Mapping | None = None,
    workers: int = 4,
    progress: bool | None = None,
) -> dict:
    """Check and hash every pair; the manifest dict, or DatasetError listing bad files.

    ``pairs`` are (image, label) paths relative to ``root`` (POSIX separators).
    The full list of bad files is also written to ``manifests/{name}-{split}.bad.txt``.
    """
    root = Path(root)
    if not pairs:
        raise DatasetError(f"no samples found for {spec.name}/{split} under {root}")
    names = tuple(class_names) if class_names is not None else spec.class_names
    show = sys.stderr.isatty() if progress is None else progress
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(tqdm(
            pool.map(lambda p: check_pair(root, *p), pairs), total=len(pairs),
            desc=f"checking {spec.name}/{split}", unit="pair", disable=not show, file=sys.stderr, leave=False,
        ))
    bad = [problem for _, problems in results for problem in problems]
    report = manifest_path(root, spec.manifest_name, split).with_suffix(".bad.txt")
    if bad:
        write_text_atomic(report, "\n".join(bad) + "\n")
        more = f"; … {len(bad) - _SHOWN_BAD} more" if len(bad) > _SHOWN_BAD else ""
        raise DatasetError(
            f"{len(bad)} bad file(s) in {spec.name}/{split} (full list in {report}): "
            + "; ".join(bad[:_SHOWN_BAD]) + more
        )
    report.unlink(missing_ok=True)
    samples = [entry for entry, _ in results]
    expected = spec.expected_sizes.get(split) if not synthetic else None
    from mpm import __version__

    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "dataset": spec.manifest_name,
        "split": split,
        "source_split": source_split or split,
        "synthetic": bool(synthetic),
        "num_classes": len(names),
        "class_names": list(names),
        "ignore_index": spec.ignore_index,
        "reduce_zero_label": spec.reduce_zero_label,
        "num_samples": len(samples),
        "expected_num_samples": expected,
        "complete": expected is None or expected == len(samples),
        "samples": samples,
        "created_by": f"mpm {__version__}",
    }
    if extra:
        manifest.update(extra)
    return manifest


def write_manifest(root: str | os.PathLike, manifest: Mapping) -> Path:
    """Write ``manifest`` atomically to its place under ``root``; return the path."""
    path = manifest_path(root, manifest["dataset"], manifest["split"])
    return write_json_atomic(path, dict(manifest))


_REQUIRED = ("dataset", "split", "num_classes", "class_names", "ignore_index", "reduce_zero_label", "samples")


def read_manifest(path: str | os.PathLike) -> dict:
    """Load and sanity-check a manifest file."""
    path = Path(path)
    if not path.is_file():
        dataset = path.stem.rsplit("-", 1)[0]
        raise DatasetError(
            f"no manifest at {path}: run `mpm prepare {dataset} --root {path.parent.parent}` first"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"cannot read manifest {path}: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DatasetError(f"{path} is not an mpm manifest")
    if manifest.get("version") != VERSION:
        raise DatasetError(f"manifest {path} has version {manifest.get('version')}, this mpm reads {VERSION}")
    missing = [key for key in _REQUIRED if key not in manifest]
    if missing:
        raise DatasetError(f"manifest {path} lacks key(s) {', '.join(missing)}")
    if len(manifest["class_names"]) != manifest["num_classes"]:
        raise DatasetError(f"manifest {path}: num_classes does not match class_names")
    return manifest


def verify_samples(root: str | os.PathLike, samples: Sequence[Mapping]) -> list[str]:
    """Files under ``root`` that are missing or whose sha256 differs from ``samples``."""
    root = Path(root)
    bad = []
    for entry in samples:
        for key in ("image", "label"):
            path = root / entry[key]
            try:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                bad.append(f"missing: {path}")
                continue
            if digest != entry[f"{key}_sha256"]:
                bad.append(f"changed: {path}")
    return bad
