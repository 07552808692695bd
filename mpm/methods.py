"""The merge methods' names, parameters and identities, importable without torch.

A :class:`MethodSpec` says what a merge method is called, where it merges, which
parameters it takes and how they are checked; :func:`identify` turns a name, a
schedule and parameters into a :class:`MethodIdentity`, the one value that says
which configuration of a method ran. Every label and path of a method comes from
its identity (:meth:`~MethodIdentity.label_for` for tables, figures and legends,
with the config's name of the schedule; :attr:`~MethodIdentity.label` with the
blocks; :attr:`~MethodIdentity.display` for the method column,
:attr:`~MethodIdentity.slug` for file names), so no module formats one by hand or
special-cases a method by name. Console lines and MLflow run names write the
config's names, ``method/schedule`` (:attr:`mpm.records.names.Names.method_schedule`).

The torch implementations (:mod:`mpm.merging`) bind to these specs: a method
class registers under its spec's name and its constructor checks its parameters
here, so the workflow validates a configuration without importing torch.

>>> ident = identify("tome", "all", depth=12, r=8)
>>> ident.label_for("all"), ident.label, ident.display, ident.slug
('ToMe(r=8; all)', 'ToMe(r=8; 0-11)', 'ToMe (r=8)', 'tome-0_1_2_3_4_5_6_7_8_9_10_11-r8')
>>> identify("mpm", (2, 5)).label_for("2-5"), identify("algm").label_for("published"), identify("none").label_for("dense")
('MPM(2,5)', 'ALGM(published)', 'none')
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Mapping, Sequence

from mpm.errors import ConfigError
from mpm.records.names import schedule_name as default_schedule_name

__all__ = ["BATCH_POLICIES", "PAPER_METHOD", "MethodIdentity", "MethodSpec", "available_methods", "find_spec",
           "get_spec", "identify", "is_dense", "method_order", "register_spec", "resolve_schedule", "schedule_text"]

Site = Literal["before_block", "after_attention"]
BATCH_POLICIES = ("exact", "batch-min")


# --------------------------------------------------------------------------------------------- schedules


def resolve_schedule(schedule: Sequence[int] | str, depth: int | None = None) -> tuple[int, ...]:
    """Blocks of a schedule; ``"all"`` means every block of an encoder of ``depth`` blocks."""
    if isinstance(schedule, str):
        if schedule.lower() != "all":
            raise ConfigError(f"schedule {schedule!r}: expected a list of block indices or 'all'")
        if depth is None:
            raise ConfigError("schedule 'all' needs the encoder depth")
        return tuple(range(depth))
    return tuple(int(b) for b in schedule)


def check_schedule(schedule: Sequence[int]) -> tuple[int, ...]:
    """The sorted blocks of a schedule; ConfigError unless they are distinct indices >= 0."""
    blocks = [int(b) for b in schedule]
    if any(b < 0 for b in blocks) or len(set(blocks)) != len(blocks):
        raise ConfigError(f"schedule {list(schedule)!r} must list distinct block indices >= 0")
    return tuple(sorted(blocks))


def schedule_text(schedule: Sequence[int]) -> str:
    """``2,5``; runs of three or more consecutive blocks are written ``0-11``."""
    blocks = sorted(int(b) for b in schedule)
    parts, i = [], 0
    while i < len(blocks):
        j = i
        while j + 1 < len(blocks) and blocks[j + 1] == blocks[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{blocks[i]}-{blocks[j]}")
            i = j + 1
        else:
            parts.append(str(blocks[i]))
            i += 1
    return ",".join(parts)


def _value_text(value: Any, sep: str = ",") -> str:
    """A parameter value in a label: ``8``; a list of equal values as one; else ``[3,4]``."""
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        return str(value[0]) if len(set(value)) == 1 else "[" + sep.join(map(str, value)) + "]"
    return str(value)


# --------------------------------------------------------------------------------------------- specs


class MethodSpec:
    """What a merge method is, torch-free: its name, title, merge site and parameters.

    Subclasses set the class attributes and implement :meth:`check_params`; one
    instance per method is registered with :func:`register_spec`.
    """

    #: registry name (configs, the CLI, records, paths)
    name: ClassVar[str]
    #: how tables, figures and legends write the method
    title: ClassVar[str]
    site: ClassVar[Site] = "before_block"
    #: False for the dense baseline: it never merges, whatever the schedule
    merges: ClassVar[bool] = True
    #: the schedule the CLI runs when none is given
    default_schedule: ClassVar[tuple[int, ...]] = ()
    #: what an empty schedule means for this method (ALGM: its published blocks)
    empty_schedule: ClassVar[tuple[int, ...]] = ()
    #: parameters written into labels and file names (``ToMe(r=8; 0-11)``, ``...-r8``)
    label_params: ClassVar[tuple[str, ...]] = ()
    #: parameter name -> default, in the order of the records
    defaults: ClassVar[dict[str, Any]] = {}

    def check_params(self, schedule: tuple[int, ...], params: dict[str, Any]) -> dict[str, Any]:
        """Checked and normalised parameters (every key of :attr:`defaults`), given the schedule as given."""
        return dict(params)

    def check(self, schedule: Sequence[int] | str = (), batch_policy: str = "exact", depth: int | None = None,
              **params: Any) -> MethodIdentity:
        """The identity of this method with these settings; ConfigError naming the method otherwise."""
        if batch_policy not in BATCH_POLICIES:
            raise ConfigError(f"unknown batch policy {batch_policy!r}; expected one of {BATCH_POLICIES}")
        given = resolve_schedule(schedule, depth)
        unknown = [k for k in params if k not in self.defaults]
        if unknown:
            known = ", ".join(self.defaults) or "none"
            raise ConfigError(f"bad parameters for merge method {self.name!r}: unexpected parameter "
                              f"{unknown[0]!r} (its parameters: {known})")
        if not self.merges:
            given = ()
        elif not given:
            given = self.empty_schedule
        blocks = check_schedule(given)
        values = self.check_params(given, {**self.defaults, **params})
        ident = MethodIdentity(self.name, blocks, batch_policy, values)
        if depth is not None:
            ident.check_depth(depth)
        return ident

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


_SPECS: dict[str, MethodSpec] = {}


def register_spec(cls: type[MethodSpec]) -> type[MethodSpec]:
    """Class decorator: register one instance of a :class:`MethodSpec` under its name."""
    _SPECS[cls.name] = cls()
    return cls


def available_methods() -> list[str]:
    """The registered merge methods, in registration order (the dense baseline first)."""
    return list(_SPECS)


def get_spec(name: str) -> MethodSpec:
    """The spec of a registered method (case-insensitive); ConfigError listing them otherwise."""
    spec = _SPECS.get(str(name).lower())
    if spec is None:
        raise ConfigError(f"unknown merge method {name!r}; available: {', '.join(sorted(_SPECS))}")
    return spec


def find_spec(name: str) -> MethodSpec | None:
    """The spec of a registered method, or None (records may name methods this checkout lacks)."""
    return _SPECS.get(str(name).lower())


def method_order(name: str) -> int:
    """Position of a method in the registry (table rows, legends, colours); unregistered names last."""
    names = available_methods()
    return names.index(name) if name in names else len(names)


def is_dense(name: str) -> bool:
    """Whether the method never merges (the dense baseline)."""
    spec = find_spec(name)
    return spec is not None and not spec.merges


#: the method the paper proposes: the ablation of schedules is about it
PAPER_METHOD = "mpm"


def identify(name: str | None, schedule: Sequence[int] | str = (), depth: int | None = None,
             batch_policy: str = "exact", **params: Any) -> MethodIdentity:
    """The checked identity of a method configuration (what :func:`mpm.merging.build_method` would build)."""
    return get_spec("none" if name is None else name).check(schedule, batch_policy, depth, **params)


# --------------------------------------------------------------------------------------------- identity


@dataclass(frozen=True, eq=False)
class MethodIdentity:
    """Which configuration of a merge method ran: name, schedule, batch policy, parameters.

    ``to_dict()`` is the ``method`` entry of every record (``MergeMethod.describe()``);
    :meth:`from_dict` reads it back. Every label and path of a method is one of the
    properties below.
    """

    name: str
    schedule: tuple[int, ...] = ()
    batch_policy: str = "exact"
    params: Mapping[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ records

    @classmethod
    def from_dict(cls, method: Mapping[str, Any]) -> "MethodIdentity":
        """The identity of a record's ``method`` entry (``{"method": "mpm", "schedule": [2, 5], ...}``).

        Keys starting with ``_`` are bookkeeping and ignored; other keys are the parameters.
        """
        if not isinstance(method, Mapping) or "method" not in method:
            raise ConfigError(f"a method entry needs a 'method' name, got {method!r}")
        params = {k: v for k, v in method.items()
                  if k not in ("method", "schedule", "batch_policy") and not str(k).startswith("_")}
        blocks = tuple(int(b) for b in method.get("schedule") or [])
        return cls(str(method["method"]), blocks, str(method.get("batch_policy") or "exact"), params)

    def to_dict(self) -> dict[str, Any]:
        """``{"method", "schedule", "batch_policy", **params}`` (JSON-ready)."""
        return {"method": self.name, "schedule": list(self.schedule), "batch_policy": self.batch_policy,
                **{k: list(v) if isinstance(v, tuple) else v for k, v in self.params.items()}}

    @property
    def key(self) -> str:
        """A string equal for equal configurations (name, schedule, batch policy, parameters)."""
        return json.dumps(self.to_dict(), sort_keys=True, default=str)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MethodIdentity) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    # ------------------------------------------------------------------ what the method is

    @property
    def spec(self) -> MethodSpec | None:
        """The registered spec of this method, or None for a name the registry does not know."""
        return find_spec(self.name)

    @property
    def merges(self) -> bool:
        """Whether this configuration merges at all (the dense baseline, or an empty schedule, does not)."""
        spec = self.spec
        return bool(self.schedule) and (spec is None or spec.merges)

    @property
    def title(self) -> str:
        """``MPM``, ``ToMe``, ``ALGM``, ``none`` (an unregistered name as it is)."""
        spec = self.spec
        return spec.title if spec is not None else self.name

    @property
    def order(self) -> int:
        """Position of the method in the registry (table rows, legends); unregistered names last."""
        return method_order(self.name)

    def check_depth(self, depth: int) -> None:
        """Fail clearly if the schedule does not fit an encoder of ``depth`` blocks."""
        bad = [b for b in self.schedule if b >= depth]
        if bad:
            raise ConfigError(f"{self.name}: schedule blocks {bad} out of range for an encoder of {depth} blocks")

    # ------------------------------------------------------------------ the labels

    def _label_params(self) -> list[tuple[str, Any]]:
        spec = self.spec
        names = spec.label_params if spec is not None else ()
        return [(k, self.params[k]) for k in names if self.params.get(k) is not None]

    @property
    def schedule_text(self) -> str:
        """``2,5``, ``0-11``."""
        return schedule_text(self.schedule)

    def label_for(self, schedule_name: str) -> str:
        """Tables, figures and legends, with the config's name of the schedule: ``ToMe(r=8; all)``, ``ALGM(published)``.

        A name that is only the blocks' default name (``2-5``, :func:`mpm.records.names.schedule_name`)
        shows the blocks as :attr:`label` does (``MPM(2,5)``, the paper's form); the dense baseline is
        ``none``; `` batch-min`` appended.
        """
        named = schedule_name != default_schedule_name(self.schedule)
        return self._label(schedule_name if named else self.schedule_text)

    @property
    def label(self) -> str:
        """The blocks instead of a schedule name: ``MPM(2,5)``, ``ToMe(r=8; 0-11)``, ``none``; `` batch-min`` appended."""
        return self._label(self.schedule_text)

    def _label(self, schedule: str) -> str:
        spec = self.spec
        if spec is not None and not spec.merges:
            text = self.title
        else:
            inner = "; ".join([*(f"{k}={_value_text(v)}" for k, v in self._label_params()), schedule])
            text = f"{self.title}({inner})"
        return text + (f" {self.batch_policy}" if self.batch_policy != "exact" else "")

    @property
    def display(self) -> str:
        """The method column: ``MPM``, ``ToMe (r=8)``, ``none``; `` [batch-min]`` appended."""
        shown = ", ".join(f"{k}={_value_text(v)}" for k, v in self._label_params())
        text = self.title + (f" ({shown})" if shown else "")
        return text + (f" [{self.batch_policy}]" if self.batch_policy != "exact" else "")

    @property
    def slug(self) -> str:
        """File names: ``mpm-2_5``, ``tome-0_1_..._11-r8``, ``mpm-2_5-batch-min``, ``none``."""
        text = self.name + ("-" + "_".join(map(str, self.schedule)) if self.schedule else "")
        if self.batch_policy != "exact":
            text += f"-{self.batch_policy}"
        for k, v in self._label_params():
            text += f"-{k}" + ("_".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v))
        return text

    def __repr__(self) -> str:
        return f"MethodIdentity({self.label!r})"


# --------------------------------------------------------------------------------------------- the methods


@register_spec
class NoneSpec(MethodSpec):
    """The dense baseline: never merges."""

    name = "none"
    title = "none"
    merges = False


@register_spec
class MPMSpec(MethodSpec):
    """Mutual Pair Merging before each scheduled block (no parameters)."""

    name = "mpm"
    title = "MPM"
    site = "before_block"
    default_schedule = (2, 5)


@register_spec
class ToMeSpec(MethodSpec):
    """ToMe between attention and MLP: ``r`` tokens removed per scheduled block, proportional attention."""

    name = "tome"
    title = "ToMe"
    site = "after_attention"
    label_params = ("r",)
    defaults = {"r": 8, "prop_attn": False}

    def check_params(self, schedule: tuple[int, ...], params: dict[str, Any]) -> dict[str, Any]:
        r = params["r"]
        if isinstance(r, (list, tuple)):
            if len(r) != len(schedule):
                raise ConfigError(f"tome: r has {len(r)} entries but the schedule has {len(schedule)} blocks")
            try:
                rs = [int(v) for v in r]
            except (TypeError, ValueError):
                raise ConfigError(f"tome: r must be an int or a list of ints, got {r!r}") from None
        elif isinstance(r, int) and not isinstance(r, bool):
            rs = [r]
        else:
            raise ConfigError(f"tome: r must be an int or a list of ints, got {r!r}")
        if any(v < 0 for v in rs):
            raise ConfigError(f"tome: r must be >= 0, got {r!r}")
        return {"r": r if isinstance(r, int) else rs, "prop_attn": bool(params["prop_attn"])}


#: ALGM's published blocks (0-based; ``--selected-layers 1 5``) and local threshold (:mod:`mpm.merging.algm`)
ALGM_DEFAULT_SCHEDULE: tuple[int, int] = (0, 4)
ALGM_DEFAULT_LOCAL_THRESHOLD = 0.88


@register_spec
class ALGMSpec(MethodSpec):
    """ALGM, training-free: local window merging in the first scheduled block, global after."""

    name = "algm"
    title = "ALGM"
    site = "after_attention"
    empty_schedule = ALGM_DEFAULT_SCHEDULE
    defaults = {"local_threshold": ALGM_DEFAULT_LOCAL_THRESHOLD, "global_threshold": None, "window": (2, 2),
                "metric": "tokens", "prop_attn": False}

    def check_params(self, schedule: tuple[int, ...], params: dict[str, Any]) -> dict[str, Any]:
        def number(key: str) -> float:
            try:
                return float(params[key])
            except (TypeError, ValueError):
                raise ConfigError(f"algm: could not convert {key} {params[key]!r} to a number") from None

        try:
            window = tuple(int(v) for v in params["window"])
        except (TypeError, ValueError):
            window = ()
        if len(window) != 2 or min(window) < 1 or window[0] * window[1] < 2:
            raise ConfigError(f"algm: window must be two sizes >= 1 covering >= 2 tokens, got {params['window']!r}")
        if params["metric"] not in ("tokens", "keys"):
            raise ConfigError(f"algm: metric must be 'tokens' or 'keys', got {params['metric']!r}")
        return {
            "local_threshold": number("local_threshold"),
            "global_threshold": None if params["global_threshold"] is None else number("global_threshold"),
            "window": list(window),
            "metric": params["metric"],
            "prop_attn": bool(params["prop_attn"]),
        }
