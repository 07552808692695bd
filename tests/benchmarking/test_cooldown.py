"""The thermal protocol: wait below a threshold, time out clearly, refuse an unreadable sensor."""

from __future__ import annotations

import time

import pytest

from mpm.benchmarking.cooldown import CooldownConfig, CooldownError, wait_for_cooldown
from mpm.environment import soc_temperature_c
from mpm.benchmarking.running import run_target
from mpm.benchmarking.targets import LocalTarget
from mpm.errors import ConfigError


class Sensor:
    """A SoC that cools by a fixed step per reading (a real callable, no patching)."""

    def __init__(self, start: float, step: float, floor: float = 30.0) -> None:
        self.temp, self.step, self.floor, self.reads = start, step, floor, 0

    def __call__(self) -> float:
        self.reads += 1
        value = self.temp
        self.temp = max(self.floor, self.temp - self.step)
        return value


def test_waits_until_below_threshold():
    sensor = Sensor(start=62.0, step=4.0)
    record = wait_for_cooldown(CooldownConfig(max_temp_c=50, poll_s=0.01, timeout_s=10), sensor)
    assert record["start_temp_c"] == 62.0 and record["ready_temp_c"] == 50.0
    assert record["polls"] == sensor.reads == 4 and record["waited_s"] >= 0.02
    assert record["max_temp_c"] == 50


def test_already_cool_returns_at_once():
    record = wait_for_cooldown(CooldownConfig(max_temp_c=60, poll_s=5, timeout_s=10), lambda: 41.5)
    assert record["polls"] == 1 and record["waited_s"] < 1 and record["ready_temp_c"] == 41.5


def test_timeout_is_a_clear_error():
    start = time.monotonic()
    with pytest.raises(CooldownError, match=r"stayed above 50 °C .*first 70.0 °C, last 70.0 °C.*timeout 0.2 s"):
        wait_for_cooldown(CooldownConfig(max_temp_c=50, poll_s=0.05, timeout_s=0.2), lambda: 70.0)
    assert time.monotonic() - start < 2


def test_unreadable_sensor_is_an_error():
    with pytest.raises(CooldownError, match="cannot be read"):
        wait_for_cooldown(CooldownConfig(max_temp_c=50), lambda: None)
    readings = iter([70.0, None])
    with pytest.raises(CooldownError, match="became unreadable"):
        wait_for_cooldown(CooldownConfig(max_temp_c=50, poll_s=0.01, timeout_s=5), lambda: next(readings))


def test_config_validation_and_cli_args():
    cfg = CooldownConfig(max_temp_c=55, poll_s=2, timeout_s=300)
    assert cfg.cli_args() == ["--cooldown-max-temp", "55.0", "--cooldown-poll", "2.0", "--cooldown-timeout", "300.0"]
    with pytest.raises(ConfigError, match="poll_s"):
        CooldownConfig(max_temp_c=55, poll_s=0)
    with pytest.raises(ConfigError, match="max_temp_c"):
        CooldownConfig(max_temp_c="55")  # type: ignore[arg-type]


@pytest.mark.skipif(soc_temperature_c() is not None, reason="this host has a readable SoC temperature")
def test_local_target_with_cooldown_refuses_without_sensor(images, tmp_path, make_spec):
    out = tmp_path / "r.json"
    target = LocalTarget(name="board", cooldown=CooldownConfig(max_temp_c=50, poll_s=0.1, timeout_s=1))
    with pytest.raises(CooldownError, match="cannot be read"):
        run_target(target, make_spec(images), out, log=None)
    assert not out.exists()
