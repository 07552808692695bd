"""Target configuration: parsing, validation errors naming the key, Snakemake resources."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from mpm.benchmarking.bench import BenchSpec
from mpm.benchmarking.targets import (
    LocalTarget,
    SlurmTarget,
    SSHTarget,
    get_target,
    load_targets,
    parse_targets,
    target_resources,
)
from mpm.cli.bench import main as bench_main
from mpm.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

SSH = {"type": "ssh", "host": "rpi5.local", "python": "/home/pi/venv/bin/python", "work_dir": "~/mpm-bench"}
SLURM = {"type": "slurm", "resources": {"slurm_partition": "gpu", "gres": "gpu:h100:1", "runtime": 120,
                                        "mem_mb": 64000, "cpus_per_task": 16}}


def parse(**targets):
    return parse_targets({"targets": targets})


def error(**targets) -> str:
    with pytest.raises(ConfigError) as err:
        parse(**targets)
    return str(err.value)


def test_full_example_parses():
    targets = parse(
        local={"type": "local", "device": "cpu", "threads": 2},
        h100={**SLURM, "device": "cuda", "threads": 16},
        rpi5={**SSH, "user": "pi", "port": 2222, "key": "~/.ssh/id_rpi", "threads": 4,
              "env": {"OMP_NUM_THREADS": 4, "MALLOC_ARENA_MAX": "2"}, "ssh_options": ["ProxyJump=gw"],
              "cooldown": {"max_temp_c": 50, "poll_s": 2.5, "timeout_s": 900}},
    )
    assert isinstance(targets["local"], LocalTarget) and targets["local"].threads == 2
    h100 = targets["h100"]
    assert isinstance(h100, SlurmTarget) and h100.device == "cuda" and h100.resources["gres"] == "gpu:h100:1"
    pi = targets["rpi5"]
    assert isinstance(pi, SSHTarget)
    assert pi.address == "pi@rpi5.local:2222" and pi.threads == 4 and pi.work_dir == "~/mpm-bench"
    assert pi.key == str(Path("~/.ssh/id_rpi").expanduser())
    assert pi.env == {"OMP_NUM_THREADS": "4", "MALLOC_ARENA_MAX": "2"}
    assert pi.cooldown.max_temp_c == 50 and pi.cooldown.poll_s == 2.5 and pi.cooldown.timeout_s == 900
    assert pi.known_hosts == ".mpm/known_hosts" and pi.connect_timeout == 10 and not pi.keep_job_dir


def test_unknown_target_lists_declared(tmp_path):
    path = tmp_path / "targets.yaml"
    path.write_text(yaml.safe_dump({"targets": {"rpi5": SSH}}))
    with pytest.raises(ConfigError, match=r"unknown target 'h200'.*declared: local, rpi5"):
        get_target("h200", path)
    assert isinstance(get_target("local", path), LocalTarget)  # always there


@pytest.mark.parametrize("drop", ["host", "python", "work_dir", "type"])
def test_missing_key_is_named(drop):
    spec = {k: v for k, v in SSH.items() if k != drop}
    assert f"targets.pi.{drop}: required key missing" in error(pi=spec)


@pytest.mark.parametrize("key, value, expect", [
    ("port", "22", "targets.pi.port: expected an integer port"),
    ("port", True, "targets.pi.port: expected an integer port"),
    ("port", 70000, "targets.pi.port: expected an integer port (1-65535), got 70000"),
    ("threads", "4", "targets.pi.threads: expected an integer"),
    ("threads", 0, "targets.pi.threads: must be >= 1"),
    ("host", 12, "targets.pi.host: expected a string"),
    ("env", ["A=1"], "targets.pi.env: expected a mapping"),
    ("env", {"A": {"b": 1}}, "targets.pi.env.A: expected a string or number"),
    ("env", {"1A": "x"}, "targets.pi.env: '1A' is not an environment variable name"),
    ("cooldown", {"max_temp_c": "hot"}, "targets.pi.cooldown.max_temp_c: expected a number"),
    ("cooldown", {"poll_s": 1}, "targets.pi.cooldown.max_temp_c: required key missing"),
    ("cooldown", {"max_temp_c": 50, "fan": True}, "targets.pi.cooldown.fan: unknown key"),
    ("cooldown", {"max_temp_c": 500}, "targets.pi.cooldown.max_temp_c: 500 is not a plausible"),
    ("keep_job_dir", "yes", "targets.pi.keep_job_dir: expected true/false"),
    ("ssh_options", ["-v"], "targets.pi.ssh_options[0]: expected an ssh -o option"),
    ("device", "tpu", "targets.pi.device: expected cpu, cuda or cuda:N"),
    ("hots", "x", "targets.pi.hots: unknown key for a ssh target"),
    ("resources", {}, "targets.pi.resources: unknown key for a ssh target"),
    ("type", "kubernetes", "targets.pi.type: unknown target type 'kubernetes'"),
    ("python", "-c", "targets.pi.python: '-c' starts with '-'"),
    ("work_dir", "--help", "targets.pi.work_dir: '--help' starts with '-'; write it as ./--help"),
    ("work_dir", "a\nb", "targets.pi.work_dir: must be a non-empty path on one line"),
])
def test_wrong_types_and_values_name_the_key(key, value, expect):
    assert expect in error(pi={**SSH, key: value})


@pytest.mark.parametrize("resources, expect", [
    ({"partition": "gpu"}, "targets.h100.resources.partition: not a resource of the SLURM executor plugin"),
    ({"gres": "h100"}, "targets.h100.resources.gres: 'h100' is not NAME:COUNT"),
    ({"gres": "gpu:h100:1", "gpu": 1}, "targets.h100.resources.gpu: give either gres or gpu"),
    ({"gpu_model": "h100"}, "targets.h100.resources.gpu_model: needs gpu"),
    ({"mem_mb": "64G"}, "targets.h100.resources.mem_mb: expected an integer"),
    ({"runtime": "two hours"}, "targets.h100.resources.runtime: 'two hours' is not minutes"),
    ({"cpus_per_task": 0}, "targets.h100.resources.cpus_per_task: must be >= 1"),
    ({"mem_mb": 1000, "mem_mb_per_cpu": 100}, "mutually exclusive"),
])
def test_slurm_resources_are_validated(resources, expect):
    assert expect in error(h100={"type": "slurm", "resources": resources})


def test_slurm_target_needs_an_allocation(monkeypatch):
    target = parse(h100=SLURM)["h100"]
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(ConfigError, match="run it inside a SLURM allocation"):
        target.check_allocation()
    monkeypatch.setenv("SLURM_JOB_ID", "12345")
    target.check_allocation()
    assert target.describe()["slurm_job_id"] == "12345"
    parse(h100={**SLURM, "require_allocation": False})["h100"].check_allocation()


def test_target_resources_for_snakemake_rules(tmp_path):
    path = tmp_path / "targets.yaml"
    path.write_text(yaml.safe_dump({"targets": {"h100": SLURM, "rpi5": SSH}}))
    assert target_resources("h100", path) == {"bench_h100": 1, **SLURM["resources"]}
    assert target_resources("rpi5", path) == {"bench_rpi5": 1}
    assert target_resources("local", path) == {"bench_local": 1}


def test_bad_names_and_files(tmp_path):
    assert "target names must be identifiers" in error(**{"rpi-5": SSH})
    with pytest.raises(ConfigError, match="expected a top-level 'targets:' map"):
        parse_targets({"rpi5": SSH}, "cfg.yaml")
    with pytest.raises(ConfigError, match="cannot read targets config"):
        load_targets(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("targets: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_targets(bad)
    with_file = tmp_path / "named.yaml"
    with_file.write_text(yaml.safe_dump({"targets": {"pi": {**SSH, "port": "x"}}}))
    with pytest.raises(ConfigError, match=re.escape(f"{with_file}: targets.pi.port")):
        load_targets(with_file)


def test_cli_reports_config_errors(tmp_path, capsys):
    path = tmp_path / "targets.yaml"
    path.write_text(yaml.safe_dump({"targets": {"pi": {**SSH, "port": "abc"}}}))
    out = tmp_path / "r.json"
    rc = bench_main(["--targets-config", str(path), "--target", "pi", "--images", str(tmp_path), "--out", str(out)])
    assert rc == 2 and "targets.pi.port" in capsys.readouterr().err and not out.exists()
    path.write_text(yaml.safe_dump({"targets": {"pi": SSH}}))
    rc = bench_main(["--targets-config", str(path), "--target", "nope", "--images", str(tmp_path), "--out", str(out)])
    assert rc == 2 and "unknown target 'nope'" in capsys.readouterr().err
    assert bench_main(["--targets-config", str(path), "--list-targets"]) == 0
    assert "pi: ssh rpi5.local:22" in capsys.readouterr().out


def test_readme_example_config_is_valid():
    text = (REPO / "envs" / "rpi5" / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    configs = [yaml.safe_load(b) for b in blocks if b.lstrip().startswith("targets:")]
    assert configs, "envs/rpi5/README.md should show a targets config"
    for config in configs:
        targets = parse_targets(config, "envs/rpi5/README.md")
        assert any(isinstance(t, SSHTarget) and t.cooldown and t.threads == 4 for t in targets.values())


def test_benchspec_round_trip_and_errors():
    spec = BenchSpec(images="x", crop=(64, 96), method="tome", schedule=(0, 1), method_kwargs={"r": 2})
    assert BenchSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError, match="unknown key\\(s\\) 'imagez'"):
        BenchSpec.from_dict({"imagez": "x"})
    with pytest.raises(ConfigError, match="'images' is required"):
        BenchSpec.from_dict({"model": "T"})
