"""Thermal protocol for small boards (Raspberry Pi 5): wait for the SoC to cool before a point.

A Pi throttles its clock when hot, so back-to-back points would be measured at
different frequencies. Before each point, :func:`wait_for_cooldown` polls the SoC
temperature (:func:`mpm.environment.soc_temperature_c`: ``vcgencmd
measure_temp``, else ``/sys/class/thermal/thermal_zone0/temp``) until it is at or
below the target's threshold, and gives up with :class:`CooldownError` after the
timeout. The wait is recorded with the result (``environment.cooldown``); the
temperature right before and after the timed runs and the ``vcgencmd
get_throttled`` flags are recorded by :func:`~mpm.benchmarking.bench.run_point`.

On a remote target this runs *on the board* (the remote ``mpm bench`` gets the
target's cooldown settings as options), so the temperature read is the board's.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass
from typing import Callable

from mpm.errors import ConfigError, MPMError


class CooldownError(MPMError, RuntimeError):
    """The SoC did not cool below the threshold in time, or its temperature cannot be read."""


@dataclass(frozen=True)
class CooldownConfig:
    """Wait until the SoC is at or below ``max_temp_c`` °C, polling every ``poll_s`` s, for at most ``timeout_s`` s."""

    max_temp_c: float
    poll_s: float = 5.0
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        for key in ("max_temp_c", "poll_s", "timeout_s"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"cooldown.{key}: expected a number, got {value!r}")
        if not 0 < self.max_temp_c < 150:
            raise ConfigError(f"cooldown.max_temp_c: {self.max_temp_c} is not a plausible SoC temperature (°C)")
        if self.poll_s <= 0:
            raise ConfigError(f"cooldown.poll_s: must be > 0, got {self.poll_s}")
        if self.timeout_s < 0:
            raise ConfigError(f"cooldown.timeout_s: must be >= 0, got {self.timeout_s}")

    def to_dict(self) -> dict:
        return asdict(self)

    def cli_args(self) -> list[str]:
        """The ``mpm bench`` options that reproduce this configuration (for a remote run)."""
        return ["--cooldown-max-temp", repr(float(self.max_temp_c)), "--cooldown-poll", repr(float(self.poll_s)),
                "--cooldown-timeout", repr(float(self.timeout_s))]


def _default_reader() -> float | None:
    from mpm.environment import soc_temperature_c

    return soc_temperature_c()


def wait_for_cooldown(
    config: CooldownConfig,
    read_temperature: Callable[[], float | None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Block until the SoC temperature is <= ``config.max_temp_c``; return a record of the wait.

    ``read_temperature`` returns °C or None (unreadable); it defaults to
    :func:`~mpm.environment.soc_temperature_c`. Raises
    :class:`CooldownError` when the temperature cannot be read or stays above the
    threshold for longer than ``config.timeout_s``.
    """
    read = read_temperature or _default_reader
    host = platform.node() or "this host"
    start = time.monotonic()
    first = read()
    if first is None:
        raise CooldownError(
            f"cooldown to {config.max_temp_c:g} °C was asked for, but the SoC temperature cannot be read on {host} "
            "(no `vcgencmd measure_temp`, no /sys/class/thermal/thermal_zone0/temp); "
            "remove the target's cooldown settings or fix the sensor access")
    temp, polls, last_log = first, 1, start
    while temp > config.max_temp_c:
        waited = time.monotonic() - start
        if waited >= config.timeout_s:
            raise CooldownError(
                f"SoC temperature on {host} stayed above {config.max_temp_c:g} °C for {waited:.0f} s "
                f"(first {first:.1f} °C, last {temp:.1f} °C, cooldown timeout {config.timeout_s:g} s): "
                "improve cooling (fan, heatsink), raise the threshold or the timeout")
        if log and time.monotonic() - last_log >= 30:
            log(f"cooldown: {temp:.1f} °C > {config.max_temp_c:g} °C, waited {waited:.0f} s")
            last_log = time.monotonic()
        time.sleep(min(config.poll_s, max(config.timeout_s - waited, 0.01)))
        reading = read()
        if reading is None:
            raise CooldownError(f"the SoC temperature on {host} became unreadable while cooling down")
        temp, polls = reading, polls + 1
    return {
        **config.to_dict(),
        "start_temp_c": float(first),
        "ready_temp_c": float(temp),
        "waited_s": round(time.monotonic() - start, 3),
        "polls": polls,
    }
