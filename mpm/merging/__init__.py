"""Token merging: MPM, ToMe and ALGM behind one interface, and merge maps.

>>> merged, index = mpm_merge(x)            # x: (1, N, C) image tokens
>>> restored = unmerge(merged, index)       # (1, N, C)
"""

from mpm.merging.base import MergeContext, MergeMethod, NoMerge, available_methods, build_method, register
from mpm.merging.maps import TokenMerge, compose, identity_map, unmerge
from mpm.merging.mpm import MPM, mpm_merge

from mpm.merging.tome import ToMe, bipartite_soft_matching, tome_merge  # registers "tome"
from mpm.merging.algm import ALGM  # registers "algm"

__all__ = [
    "ALGM",
    "MPM",
    "ToMe",
    "bipartite_soft_matching",
    "tome_merge",
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
