"""Data layer: model zoo, downloads, dataset preparation, the synthetic demo set.

- :mod:`mpm.data.zoo`        checkpoints of the paper (``ZOO``, ``get_entry``, ``checkpoint_path``)
- :mod:`mpm.data.fetch`      ``fetch_dataset`` / ``fetch_checkpoint`` (download or ``--from``, verify, unpack)
- :mod:`mpm.data.download`   pooch downloader with resume, retries, progress, checksum-before-rename
- :mod:`mpm.data.specs`      ``DatasetSpec``, ``get_spec``, ``DATASETS`` (the label spaces)
- :mod:`mpm.data.datasets`   ``load_split`` → ``SegmentationSplit`` (the specs importable from here too)
- :mod:`mpm.data.manifest`   per-split manifest files written by ``mpm prepare``
- :mod:`mpm.data.prepare`    ``prepare_dataset`` (ADE20K, Cityscapes, Pascal Context)
- :mod:`mpm.data.synthetic`  offline textured-region set in ADE20K's layout
"""

from mpm.data.datasets import (
    DATASETS,
    DatasetSpec,
    Sample,
    SegmentationSplit,
    get_spec,
    load_split,
)
from mpm.data.zoo import ZOO, ZooEntry, checkpoint_path, get_entry, list_entries

__all__ = [
    "DATASETS", "DatasetSpec", "Sample", "SegmentationSplit", "get_spec", "load_split",
    "ZOO", "ZooEntry", "checkpoint_path", "get_entry", "list_entries",
]
