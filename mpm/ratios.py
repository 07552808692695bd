"""Speed ratios and their spread, torch-free: the benchmarks time them, the tables read them.

A ratio of two timings (dense ms over a method's ms: its speedup) is significant when its spread,
the range of the ratio over repeats (:func:`ratio_stats`, :mod:`mpm.benchmarking.timing`) or between
percentiles (the tables' speedup columns, :mod:`mpm.tables.columns`), does not contain 1.0.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

__all__ = ["Ratio", "ratio_stats"]


@dataclass
class Ratio:
    """A speed ratio: its median and its spread (min, max)."""

    median: float
    low: float
    high: float

    @property
    def significant(self) -> bool:
        """False when the spread crosses 1.0 (noise could explain the difference)."""
        return not (self.low <= 1.0 <= self.high)

    def to_dict(self) -> dict:
        return {"median": self.median, "low": self.low, "high": self.high, "significant": self.significant}


def ratio_stats(numerator_ms: list[float], denominator_ms: list[float]) -> Ratio:
    """Per-repeat ``numerator / denominator`` (e.g. dense ms / method ms = speedup), as a :class:`Ratio`."""
    if len(numerator_ms) != len(denominator_ms) or not numerator_ms:
        raise ValueError("ratio_stats needs two equally long, non-empty lists of repeats")
    r = [a / b for a, b in zip(numerator_ms, denominator_ms)]
    return Ratio(statistics.median(r), min(r), max(r))
