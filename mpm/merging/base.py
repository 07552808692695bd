"""The one interface every merge method implements, and the method registry.

A method is called at *merge sites* of the encoder. A site is either
``"before_block"`` (between two blocks: MPM, ALGM) or ``"after_attention"``
(inside a block, between attention and MLP, where ToMe merges using the
attention keys). The schedule lists the blocks (0-based) with an active site.

The encoder runner (:mod:`mpm.models.encoder`) splits off prefix tokens (the
class token is never merged), calls :meth:`MergeMethod.merge` on the image
tokens, composes the returned map and keeps token sizes and lengths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, Sequence

from torch import Tensor

from mpm.errors import ConfigError
from mpm.merging.maps import TokenMerge

Site = Literal["before_block", "after_attention"]
BATCH_POLICIES = ("exact", "batch-min")


@dataclass
class MergeContext:
    """What a merge step may look at besides the image tokens.

    Attributes:
        block: index of the encoder block of this site.
        lengths: (B,) real tokens per image (padded layout) or None.
        size: (B, M) float, original patches per token (padded slots 0);
            None for methods whose ``uses_size`` is False.
        metric: (B, M, D) features to compare tokens by, or None (use ``x``).
            At ``after_attention`` sites: the block's attention keys, mean over heads.
        grid: (H, W) patch grid of the full image.
        index: (B, N) composed map so far, original patch -> current slot
            (the identity before the first merge).
    """

    block: int
    lengths: Tensor | None
    size: Tensor | None
    metric: Tensor | None
    grid: tuple[int, int]
    index: Tensor | None = None


class MergeMethod:
    """Base class: a training-free merge method with its schedule."""

    name: ClassVar[str] = "none"
    site: ClassVar[Site] = "before_block"
    #: whether attention should add log(size) to its logits (ToMe's proportional attention)
    proportional_attention: bool = False
    #: whether the method reads ``ctx.size`` (the runner skips the size bookkeeping otherwise)
    uses_size: ClassVar[bool] = True

    def __init__(self, schedule: Sequence[int] = (), batch_policy: str = "exact") -> None:
        if batch_policy not in BATCH_POLICIES:
            raise ConfigError(f"unknown batch policy {batch_policy!r}; expected one of {BATCH_POLICIES}")
        blocks = [int(b) for b in schedule]
        if any(b < 0 for b in blocks) or len(set(blocks)) != len(blocks):
            raise ConfigError(f"schedule {list(schedule)!r} must list distinct block indices >= 0")
        self.schedule: tuple[int, ...] = tuple(sorted(blocks))
        self.batch_policy = batch_policy

    def active(self, block: int, site: Site) -> bool:
        return site == self.site and block in self.schedule

    def validate(self, depth: int) -> None:
        """Fail clearly if the schedule does not fit an encoder of ``depth`` blocks."""
        bad = [b for b in self.schedule if b >= depth]
        if bad:
            raise ConfigError(f"{self.name}: schedule blocks {bad} out of range for an encoder of {depth} blocks")

    def merge(self, x: Tensor, ctx: MergeContext) -> TokenMerge:  # pragma: no cover - abstract
        """Merge image tokens x (B, M, C); see :class:`MergeContext`."""
        raise NotImplementedError

    def describe(self) -> dict:
        """Parameters that identify this configuration (for logs and results)."""
        return {"method": self.name, "schedule": list(self.schedule), "batch_policy": self.batch_policy}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "method")
        return f"{type(self).__name__}({args})"


class NoMerge(MergeMethod):
    """The dense baseline: never merges."""

    name = "none"

    def __init__(self, schedule: Sequence[int] = (), batch_policy: str = "exact") -> None:
        super().__init__((), batch_policy)

    def active(self, block: int, site: Site) -> bool:
        return False


_REGISTRY: dict[str, type[MergeMethod]] = {"none": NoMerge}


def register(cls: type[MergeMethod]) -> type[MergeMethod]:
    """Class decorator adding a method to the registry under ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


def available_methods() -> list[str]:
    return sorted(_REGISTRY)


def resolve_schedule(schedule: Sequence[int] | str, depth: int | None = None) -> tuple[int, ...]:
    """Blocks of a schedule; ``"all"`` means every block of an encoder of ``depth`` blocks."""
    if isinstance(schedule, str):
        if schedule.lower() != "all":
            raise ConfigError(f"schedule {schedule!r}: expected a list of block indices or 'all'")
        if depth is None:
            raise ConfigError("schedule 'all' needs the encoder depth")
        return tuple(range(depth))
    return tuple(int(b) for b in schedule)


def build_method(name: str | MergeMethod | None, schedule: Sequence[int] | str = (), depth: int | None = None,
                 **kwargs) -> MergeMethod:
    """Instantiate a registered merge method by name (``none``, ``mpm``, ``tome``, ``algm``).

    ``schedule`` lists the blocks with a merge site, or is ``"all"`` (every one of
    ``depth`` blocks, e.g. ToMe's usual setting).
    """
    if isinstance(name, MergeMethod):
        return name
    schedule = resolve_schedule(schedule, depth)
    if name is None:
        name = "none"
    key = name.lower()
    if key not in _REGISTRY:
        raise ConfigError(f"unknown merge method {name!r}; available: {', '.join(available_methods())}")
    try:
        return _REGISTRY[key](schedule, **kwargs)
    except TypeError as err:
        raise ConfigError(f"bad parameters for merge method {name!r}: {err}") from None
