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
from typing import Any, ClassVar, Sequence

from torch import Tensor

from mpm.errors import ConfigError
from mpm.merging.maps import TokenMerge
from mpm.methods import (BATCH_POLICIES, MethodIdentity, MethodSpec, Site, check_schedule, find_spec,  # noqa: F401
                         get_spec, resolve_schedule)
from mpm.methods import available_methods as _spec_names


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
    """Base class: a training-free merge method with its schedule.

    A subclass names its torch-free :class:`~mpm.methods.MethodSpec` (``name``): the
    spec holds its merge site, parameters and their checks, and the method's
    :attr:`identity` gives every label and path of it.
    """

    name: ClassVar[str] = "none"
    #: the torch-free description this class implements (set by :func:`register`)
    spec: ClassVar[MethodSpec]
    site: ClassVar[Site] = "before_block"
    #: whether attention should add log(size) to its logits (ToMe's proportional attention)
    proportional_attention: bool = False
    #: whether the method reads ``ctx.size`` (the runner skips the size bookkeeping otherwise)
    uses_size: ClassVar[bool] = True

    def __init__(self, schedule: Sequence[int] = (), batch_policy: str = "exact") -> None:
        if batch_policy not in BATCH_POLICIES:
            raise ConfigError(f"unknown batch policy {batch_policy!r}; expected one of {BATCH_POLICIES}")
        self.schedule: tuple[int, ...] = check_schedule(schedule)
        self.batch_policy = batch_policy

    def _checked(self, schedule: Sequence[int], **params: Any) -> dict[str, Any]:
        """This method's parameters, checked by its spec (the same check the workflow runs without torch)."""
        return get_spec(self.name).check_params(tuple(int(b) for b in schedule), {**get_spec(self.name).defaults,
                                                                                 **params})

    def active(self, block: int, site: Site) -> bool:
        return site == self.site and block in self.schedule

    def validate(self, depth: int) -> None:
        """Fail clearly if the schedule does not fit an encoder of ``depth`` blocks."""
        self.identity.check_depth(depth)

    def merge(self, x: Tensor, ctx: MergeContext) -> TokenMerge:  # pragma: no cover - abstract
        """Merge image tokens x (B, M, C); see :class:`MergeContext`."""
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """The method's own parameters (ToMe's ``r``, ALGM's thresholds), as its records hold them."""
        return {}

    @property
    def identity(self) -> MethodIdentity:
        """Name, schedule, batch policy and parameters: every label and path of this configuration."""
        return MethodIdentity(self.name, self.schedule, self.batch_policy, self.params())

    def describe(self) -> dict:
        """Parameters that identify this configuration (for logs and results): ``identity.to_dict()``."""
        return self.identity.to_dict()

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


_REGISTRY: dict[str, type[MergeMethod]] = {}


def register(cls: type[MergeMethod]) -> type[MergeMethod]:
    """Class decorator binding a method class to its spec (:mod:`mpm.methods`) under ``cls.name``."""
    spec = get_spec(cls.name)  # a class without a registered spec fails here
    if spec.site != cls.site:
        raise TypeError(f"{cls.__name__}: site {cls.site!r}, but its spec says {spec.site!r}")
    cls.spec = spec
    _REGISTRY[cls.name] = cls
    return cls


register(NoMerge)


def available_methods() -> list[str]:
    """The methods with a torch implementation, in the registry's order (:func:`mpm.methods.available_methods`)."""
    named = [name for name in _spec_names() if name in _REGISTRY]
    return named + sorted(set(_REGISTRY) - set(named))


def build_method(name: str | MergeMethod | None, schedule: Sequence[int] | str = (), depth: int | None = None,
                 **kwargs) -> MergeMethod:
    """Instantiate a registered merge method by name (``none``, ``mpm``, ``tome``, ``algm``).

    ``schedule`` lists the blocks with a merge site, or is ``"all"`` (every one of
    ``depth`` blocks, e.g. ToMe's usual setting). Parameters are checked by the
    method's spec first (:func:`mpm.methods.identify`: the same one-line errors
    as the workflow's start-up check).
    """
    if isinstance(name, MergeMethod):
        return name
    schedule = resolve_schedule(schedule, depth)
    key = "none" if name is None else str(name).lower()
    if key in _REGISTRY and find_spec(key) is None:  # a class registered by hand, without a spec
        return _REGISTRY[key](schedule, **kwargs)
    spec = get_spec(key)
    if spec.name not in _REGISTRY:
        raise ConfigError(f"merge method {spec.name!r} has no implementation here; available: "
                          f"{', '.join(available_methods())}")
    policy = kwargs.pop("batch_policy", "exact")
    spec.check(schedule, policy, **kwargs)
    return _REGISTRY[spec.name](schedule, batch_policy=policy, **kwargs)
