"""Token merging: MPM, ToMe and ALGM behind one interface, and merge maps.

>>> merged, index = mpm_merge(x)            # x: (1, N, C) image tokens
>>> restored = unmerge(merged, index)       # (1, N, C)
"""

from mpm.merging.base import MergeContext, MergeMethod, NoMerge, available_methods, build_method, register
from mpm.merging.maps import TokenMerge, compose, identity_map, unmerge
from mpm.merging.mpm import MPM, mpm_merge

# methods register themselves on import
from mpm.merging import tome as _tome  # noqa: E402,F401  isort:skip
from mpm.merging import algm as _algm  # noqa: E402,F401  isort:skip

__all__ = [
    "MPM",
    "MergeContext",
    "MergeMethod",
    "NoMerge",
    "TokenMerge",
    "available_methods",
    "build_method",
    "compose",
    "identity_map",
    "mpm_merge",
    "register",
    "unmerge",
]
