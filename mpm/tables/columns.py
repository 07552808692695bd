"""Timing columns of the paper's tables: the benchmark points of one target, backend and batch size."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from mpm.errors import ConfigError
from mpm.methods import is_dense
from mpm.ratios import Ratio
from mpm.tables.labels import _crop, _short_device


class TimingColumn:
    """The benchmark points of one column: one target, backend and batch size.

    ``kind`` ``"ips"``: images/s (speedup = images/s over dense's); ``"ms"``: ms per image
    (speedup = dense's ms over the method's). Every point must come from one device, dtype and
    (on CPUs) thread count, unless ``allow_mixed`` — then the column is marked MIXED.
    """

    def __init__(self, points: pd.DataFrame, *, target: str, backend: str, batch_size: int, kind: str, label: str,
                 allow_mixed: bool = False, warnings: list[str] | None = None) -> None:
        self.target, self.backend, self.batch_size, self.kind, self.label = target, backend, batch_size, kind, label
        self.where = f"target {target!r}, backend {backend}, batch {batch_size}"
        setups: dict[tuple, list[str]] = {}
        for p in points.itertuples():
            setups.setdefault(self._setup(p), []).append(str(p.file))
        self.setups = sorted(setups, key=str)
        self.mixed = len(setups) > 1
        if self.mixed and not allow_mixed:
            detail = "; ".join(f"{self._setup_text(s)} ({', '.join(files[:2])}{', ...' if len(files) > 2 else ''})"
                               for s, files in sorted(setups.items(), key=lambda kv: str(kv[0])))
            raise ConfigError(f"{self.where}: results from different hardware or settings cannot share one column: "
                              f"{detail}. Name one target per device, or pass --allow-mixed to mark the column instead")
        self.cells: dict[tuple[str, str], Any] = {}
        for (mk, kk), g in points.groupby(["model_key", "method_key"], sort=False):
            rows = list(g.itertuples())
            if len({self._value(x) for x in rows}) > 1 or len({self._setup(x) for x in rows}) > 1:
                files = ", ".join(str(x.file) for x in rows)
                if not allow_mixed:
                    raise ConfigError(f"{self.where}: {rows[0].model} {rows[0].label} measured more than once with "
                                      f"different results ({files}); remove the stale file(s)")
                if warnings is not None:
                    warnings.append(f"{self.where}: {rows[0].label} measured more than once ({files}); the last is used")
            self.cells[(mk, kk)] = rows[-1]
        self.dense = {mk: row for (mk, kk), row in self.cells.items() if is_dense(row.method_name)}
        self.device_text = self._setup_text(self.setups[0]) if len(self.setups) == 1 else "MIXED devices/settings"
        self.weights = sorted({row.weights for row in self.cells.values()})

    def _setup(self, p) -> tuple:
        return (p.device, p.dtype, p.threads if p.threads is not None and not pd.isna(p.threads) else None)

    @staticmethod
    def _setup_text(s: tuple) -> str:
        device, dtype, threads = s
        if threads is None:
            return f"{device}, {dtype}"
        return f"{device}, {dtype}, {int(threads)} thread{'s' if int(threads) != 1 else ''}"

    def _value(self, p) -> float:
        return float(p.images_per_s if self.kind == "ips" else p.per_image_ms)

    # -- headers and notes
    @property
    def _where_short(self) -> str:
        if self.mixed:
            return f"{self.target}: MIXED devices"
        device = self.setups[0][0]
        return _short_device(device) if self.target in (device, _short_device(device)) else \
            f"{self.target}: {_short_device(device)}"

    @property
    def value_header(self) -> str:
        what = "img/s" if self.kind == "ips" else "ms/img"
        return f"{what} {self.label} ({self._where_short})"

    @property
    def speedup_header(self) -> str:
        return f"speedup {self.label}" + ("" if self.kind == "ips" else f" ({self.target})")

    @property
    def device_header(self) -> str:
        return f"device ({self.value_header})"

    def note(self) -> str:
        what = "images/s" if self.kind == "ips" else "per-image latency (ms; median of a batch / batch size)"
        weights = " and ".join(self.weights)
        return (f"{self.value_header}: {what} on target {self.target} ({self.device_text}), backend {self.backend}, "
                f"batch {self.batch_size}, weights {weights}; speedup over the dense model in the same column.")

    # -- values
    def resolve_model(self, info: dict, eval_ids: dict[str, set[str]]) -> tuple[str | None, str]:
        """The model key of this column's points that timed the evaluated model ``info``, and how it was found."""
        keys = {mk for mk, _ in self.cells}
        if info["model_key"] in keys:
            return info["model_key"], "checkpoint"
        by_name = {mk for (mk, _), row in self.cells.items()
                   if row.weights == "checkpoint" and row.model_id == info["model_id"]}
        if len(by_name) == 1 and len(eval_ids.get(info["model_id"], ())) <= 1:
            return next(iter(by_name)), "checkpoint (matched by file name)"
        random = {mk for (mk, _), row in self.cells.items()
                  if row.weights == "random-init" and str(row.size) == str(info["size"])
                  and (info["crop"] is None or _crop(row.crop) is None or _crop(row.crop) == info["crop"])}
        if len(random) == 1:
            return next(iter(random)), "random-init"
        return None, ""

    def value(self, model_key: str | None, method_key_: str) -> float:
        row = self.cells.get((model_key, method_key_)) if model_key else None
        return self._value(row) if row is not None else math.nan

    def speedup(self, model_key: str | None, method_key_: str) -> float:
        row = self.cells.get((model_key, method_key_)) if model_key else None
        dense = self.dense.get(model_key) if model_key else None
        if row is None or dense is None or self._setup(row) != self._setup(dense):
            return math.nan
        v, d = self._value(row), self._value(dense)
        return v / d if self.kind == "ips" else d / v

    def significant(self, model_key: str | None, method_key_: str) -> bool | None:
        """Whether the speedup over dense stands out of the timings' spread (None: no speedup).

        The speedup's spread is the dense p10 over the method's p90 to the dense p90 over the
        method's p10 (per batch, same batch size); :attr:`~mpm.ratios.Ratio.significant`
        says whether it leaves out 1.0.
        """
        row = self.cells.get((model_key, method_key_)) if model_key else None
        dense = self.dense.get(model_key) if model_key else None
        if row is None or dense is None or self._setup(row) != self._setup(dense) or row is dense:
            return None
        speedup = Ratio(self.speedup(model_key, method_key_), dense.p10_ms / row.p90_ms, dense.p90_ms / row.p10_ms)
        return speedup.significant

    def device(self, model_key: str | None, method_key_: str) -> str | None:
        row = self.cells.get((model_key, method_key_)) if model_key else None
        return self._setup_text(self._setup(row)) if row is not None else None
