"""Benchmark targets: where a point runs, declared in configuration, not in code.

A YAML file (``config/targets.yaml`` by default, or any file with a top-level
``targets:`` map, e.g. the workflow's config) names the targets::

    targets:
      local:                       # this host (always available, even when not declared)
        type: local
        device: cpu                # cpu | cuda | cuda:N
      h100:                        # a GPU node reached through Snakemake's SLURM executor plugin
        type: slurm
        device: cuda
        threads: 16
        resources:                 # handed to the rule (snakemake-executor-plugin-slurm keys)
          slurm_partition: gpu
          gres: "gpu:h100:1"
          runtime: 120             # minutes
          mem_mb: 64000
          cpus_per_task: 16
      rpi5:                        # a board reached over SSH
        type: ssh
        host: rpi5.local
        user: pi
        port: 22
        key: ~/.ssh/id_ed25519_rpi5
        python: /home/pi/mpm-venv/bin/python
        work_dir: ~/mpm-bench      # on the board; one job directory per point under work_dir/jobs/
        threads: 4
        env: {OMP_NUM_THREADS: "4"}
        cooldown: {max_temp_c: 50, poll_s: 5, timeout_s: 900}

Keys of every target: ``type`` (required), ``device``, ``threads``, ``env``
(string map), ``cooldown`` (see :mod:`mpm.benchmarking.cooldown`), ``description``.
``ssh`` adds ``host`` (required), ``python`` (required), ``work_dir`` (required),
``user``, ``port``, ``key``, ``known_hosts``, ``connect_timeout``, ``run_timeout``,
``ssh_options`` (extra ``-o`` options, e.g. ``ProxyJump=gw``), ``keep_job_dir``.
``slurm`` adds ``resources`` (the SLURM executor plugin's resource keys) and
``require_allocation`` (default true: refuse to run outside a SLURM job).

A ``slurm`` target is run by the workflow through Snakemake's SLURM executor
plugin: the rule's resources (:func:`target_resources`) select the partition and
GPU, and inside the allocated job the point runs locally on the node. Local paths
in the file (``key``, ``known_hosts``) may use ``~`` and ``$VARS`` and are relative
to the current directory. Every problem raises :class:`~mpm.errors.ConfigError`
naming the file and the key (``targets.rpi5.port``). Running a point on a target:
:mod:`mpm.benchmarking.running`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

import yaml

from mpm.benchmarking.cooldown import CooldownConfig
from mpm.errors import ConfigError

#: the file ``mpm bench`` reads when ``--targets-config`` is not given (if it exists)
DEFAULT_TARGETS_FILE = Path("config/targets.yaml")
TARGET_TYPES = ("local", "ssh", "slurm")
RUNTIMES = ("torch", "onnxruntime")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")
_MISSING = object()

#: resource keys of snakemake-executor-plugin-slurm (its docs / submit code) and their types
SLURM_RESOURCE_TYPES: dict[str, tuple[type, ...]] = {
    "slurm_partition": (str,),
    "slurm_account": (str,),
    "runtime": (int, str),
    "mem_mb": (int,),
    "mem": (str,),
    "mem_mb_per_cpu": (int,),
    "cpus_per_task": (int,),
    "cpus_per_gpu": (int,),
    "gres": (str,),
    "gpu": (int,),
    "gpu_model": (str,),
    "constraint": (str,),
    "qos": (str,),
    "slurm_extra": (str,),
    "nodes": (int,),
    "tasks": (int,),
    "tasks_per_gpu": (int,),
    "clusters": (str,),
    "disk_mb": (int,),
}
_COMMON_KEYS = frozenset({"type", "device", "threads", "env", "cooldown", "description"})
_TYPE_KEYS = {
    "local": frozenset(),
    "slurm": frozenset({"resources", "require_allocation"}),
    "ssh": frozenset({"host", "python", "work_dir", "user", "port", "key", "known_hosts", "connect_timeout",
                      "run_timeout", "ssh_options", "keep_job_dir"}),
}
#: the SLURM job's environment variables recorded with a timing run inside an allocation (:func:`slurm_allocation`)
SLURM_ALLOCATION_ENV = {
    "job_id": "SLURM_JOB_ID",
    "partition": "SLURM_JOB_PARTITION",
    "node": "SLURMD_NODENAME",
    "nodelist": "SLURM_JOB_NODELIST",
    "cluster": "SLURM_CLUSTER_NAME",
    "cpus_on_node": "SLURM_CPUS_ON_NODE",
    "step_id": "SLURM_STEP_ID",
}
_GRES = re.compile(r"^[a-zA-Z0-9_]+(:[a-zA-Z0-9_.]+)?:\d+$")
_RUNTIME = re.compile(r"^(\d+|(\d+(\.\d+)?[dhms])+|(\d+-)?\d+(:\d+){0,2})$")


def slurm_allocation(environ: Mapping[str, str] | None = None) -> dict[str, str | None] | None:
    """The SLURM allocation this process runs in (job id, partition, node...), read from the variables
    SLURM sets in a job (:data:`SLURM_ALLOCATION_ENV`); ``None`` outside a job."""
    env = os.environ if environ is None else environ
    if not env.get("SLURM_JOB_ID"):
        return None
    return {key: env.get(var) or None for key, var in SLURM_ALLOCATION_ENV.items()}


@dataclass(frozen=True)
class Target:
    """What every target has."""

    type: ClassVar[str] = "local"
    #: the point runs in this process's host (so a SLURM allocation around it is recorded)
    runs_here: ClassVar[bool] = True
    name: str
    device: str = "cpu"
    threads: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    cooldown: CooldownConfig | None = None
    description: str | None = None

    def describe(self) -> dict:
        """The part of the target recorded with each result (``result["target"]``)."""
        d = {"name": self.name, "type": self.type, "device": self.device, "threads": self.threads}
        if self.cooldown:
            d["cooldown"] = self.cooldown.to_dict()
        allocation = slurm_allocation() if self.runs_here else None
        if allocation:
            d["slurm"] = allocation
        return d

    def resource_name(self) -> str:
        """The Snakemake resource that serialises latency jobs on this target: ``bench_<name>``."""
        return f"bench_{self.name}"


@dataclass(frozen=True)
class LocalTarget(Target):
    """This host (CPU or CUDA)."""

    type: ClassVar[str] = "local"


@dataclass(frozen=True)
class SlurmTarget(Target):
    """A GPU node reached through Snakemake's SLURM executor plugin; the point runs locally inside the job."""

    type: ClassVar[str] = "slurm"
    device: str = "cuda"
    resources: dict[str, Any] = field(default_factory=dict)
    require_allocation: bool = True

    def check_allocation(self) -> None:
        """Refuse to measure on a login node: a slurm target must run inside a SLURM job."""
        if self.require_allocation and not os.environ.get("SLURM_JOB_ID"):
            raise ConfigError(
                f"target {self.name!r} is a slurm target: run it inside a SLURM allocation (the workflow's "
                "slurm profile, `snakemake --profile workflow/profiles/slurm`, or `srun ... mpm bench`); "
                f"SLURM_JOB_ID is not set. Set targets.{self.name}.require_allocation: false to run it here anyway")

    def describe(self) -> dict:
        d = super().describe()
        d["resources"] = dict(self.resources)
        d["slurm_job_id"] = os.environ.get("SLURM_JOB_ID")
        d["slurm_job_partition"] = os.environ.get("SLURM_JOB_PARTITION")
        return d


@dataclass(frozen=True)
class SSHTarget(Target):
    """A machine reached over SSH (a Raspberry Pi 5): the job is shipped, run there and fetched back."""

    type: ClassVar[str] = "ssh"
    runs_here: ClassVar[bool] = False
    host: str = ""
    python: str = "python3"
    work_dir: str = "~/mpm-bench"
    user: str | None = None
    port: int = 22
    key: str | None = None
    known_hosts: str = ".mpm/known_hosts"
    connect_timeout: int = 10
    run_timeout: int | None = 7200
    ssh_options: tuple[str, ...] = ()
    keep_job_dir: bool = False

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def address(self) -> str:
        """``user@host:port``, as error messages name the target."""
        return f"{self.destination}:{self.port}"

    def describe(self) -> dict:
        d = super().describe()
        d.update(host=self.host, port=self.port, user=self.user, python=self.python, work_dir=self.work_dir)
        return d


# -- parsing -----------------------------------------------------------------------------------------------


class _Fields:
    """Reads typed keys of one mapping, remembering which were used; names ``where.key`` in errors."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a mapping of keys, got {_show(data)}")
        for key in data:
            if not isinstance(key, str):
                raise ConfigError(f"{where}: key {key!r} is not a string")
        self.data, self.where, self.used = dict(data), where, set()

    def get(self, key: str, kinds: tuple[type, ...], default: Any = _MISSING, what: str | None = None) -> Any:
        self.used.add(key)
        if key not in self.data or self.data[key] is None:
            if default is _MISSING:
                raise ConfigError(f"{self.where}.{key}: required key missing")
            return default
        value = self.data[key]
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise ConfigError(f"{self.where}.{key}: expected {what or _kinds(kinds)}, got {_show(value)}")
        return value

    def finish(self, allowed_note: str = "") -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(f"{self.where}.{unknown[0]}: unknown key (allowed: {', '.join(sorted(self.used))})"
                              + allowed_note)


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _kinds(kinds: tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true/false", dict: "a mapping",
             list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _local_path(text: str) -> str:
    return os.path.expandvars(os.path.expanduser(text))


def _positive(fields: _Fields, key: str, default: Any, minimum: int = 1) -> Any:
    value = fields.get(key, (int,), default)
    if value is not None and value < minimum:
        raise ConfigError(f"{fields.where}.{key}: must be >= {minimum}, got {value}")
    return value


def _common(fields: _Fields, name: str, default_device: str) -> dict[str, Any]:
    device = fields.get("device", (str,), default_device)
    if not _DEVICE.match(device):
        raise ConfigError(f"{fields.where}.device: expected cpu, cuda or cuda:N, got {device!r}")
    env_raw = fields.get("env", (dict,), {})
    env: dict[str, str] = {}
    for key, value in env_raw.items():
        if not isinstance(key, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise ConfigError(f"{fields.where}.env: {key!r} is not an environment variable name")
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"{fields.where}.env.{key}: expected a string or number, got {_show(value)}")
        env[key] = str(value).lower() if isinstance(value, bool) else str(value)
    cooldown_raw = fields.get("cooldown", (dict,), None)
    cooldown = None
    if cooldown_raw is not None:
        cf = _Fields(cooldown_raw, f"{fields.where}.cooldown")
        kwargs = {
            "max_temp_c": cf.get("max_temp_c", (float,)),
            "poll_s": cf.get("poll_s", (float,), 5.0),
            "timeout_s": cf.get("timeout_s", (float,), 600.0),
        }
        cf.finish()
        try:
            cooldown = CooldownConfig(**kwargs)
        except ConfigError as err:
            raise ConfigError(f"{fields.where}.{err}") from None
    return {
        "name": name,
        "device": device,
        "threads": _positive(fields, "threads", None),
        "env": env,
        "cooldown": cooldown,
        "description": fields.get("description", (str,), None),
    }


def _slurm_resources(raw: Any, where: str) -> dict[str, Any]:
    fields = _Fields(raw, where)
    out: dict[str, Any] = {}
    for key in fields.data:
        if key not in SLURM_RESOURCE_TYPES:
            raise ConfigError(f"{where}.{key}: not a resource of the SLURM executor plugin (known: "
                              f"{', '.join(SLURM_RESOURCE_TYPES)})")
        out[key] = fields.get(key, SLURM_RESOURCE_TYPES[key])
    if "gres" in out and not _GRES.match(out["gres"]):
        raise ConfigError(f"{where}.gres: {out['gres']!r} is not NAME:COUNT or NAME:TYPE:COUNT (e.g. gpu:h100:1)")
    if "gres" in out and "gpu" in out:
        raise ConfigError(f"{where}.gpu: give either gres or gpu (+ gpu_model), not both")
    if "gpu_model" in out and "gpu" not in out:
        raise ConfigError(f"{where}.gpu_model: needs gpu (the number of GPUs) as well")
    if "mem_mb" in out and "mem_mb_per_cpu" in out:
        raise ConfigError(f"{where}.mem_mb_per_cpu: mem_mb and mem_mb_per_cpu are mutually exclusive")
    if isinstance(out.get("runtime"), str) and not _RUNTIME.match(out["runtime"].strip()):
        raise ConfigError(f"{where}.runtime: {out['runtime']!r} is not minutes, 2h30m-style or D-HH:MM:SS")
    for key in ("mem_mb", "cpus_per_task", "cpus_per_gpu", "gpu", "nodes", "tasks", "runtime"):
        if isinstance(out.get(key), int) and out[key] < 1:
            raise ConfigError(f"{where}.{key}: must be >= 1, got {out[key]}")
    return out


def parse_target(name: str, data: Any, source: str = "targets") -> Target:
    """One target from its mapping; ``source`` prefixes error messages."""
    where = f"{source}: targets.{name}" if source != "targets" else f"targets.{name}"
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{where}: target names must be identifiers (letters, digits, _), got {name!r}")
    fields = _Fields(data, where)
    kind = fields.get("type", (str,))
    if kind not in TARGET_TYPES:
        raise ConfigError(f"{where}.type: unknown target type {kind!r}; expected one of {', '.join(TARGET_TYPES)}")
    allowed = _COMMON_KEYS | _TYPE_KEYS[kind]
    unknown = sorted(k for k in fields.data if k not in allowed)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key for a {kind} target "
                          f"(allowed: {', '.join(sorted(allowed))})")
    if kind == "local":
        target: Target = LocalTarget(**_common(fields, name, "cpu"))
    elif kind == "slurm":
        common = _common(fields, name, "cuda")
        target = SlurmTarget(
            **common,
            resources=_slurm_resources(fields.get("resources", (dict,), {}), f"{where}.resources"),
            require_allocation=fields.get("require_allocation", (bool,), True),
        )
    else:
        common = _common(fields, name, "cpu")
        host = fields.get("host", (str,)).strip()
        if not host or host.startswith("-") or any(c.isspace() for c in host):
            raise ConfigError(f"{where}.host: {host!r} is not a host name or address")
        user = fields.get("user", (str,), None)
        if user is not None and (not user or user.startswith("-") or any(c.isspace() or c == "@" for c in user)):
            raise ConfigError(f"{where}.user: {user!r} is not a user name")
        port = fields.get("port", (int,), 22, what="an integer port (1-65535)")
        if not 1 <= port <= 65535:
            raise ConfigError(f"{where}.port: expected an integer port (1-65535), got {port}")
        python = fields.get("python", (str,))
        work_dir = fields.get("work_dir", (str,))
        for key, value in (("python", python), ("work_dir", work_dir)):
            if not value.strip() or "\n" in value or "\0" in value:
                raise ConfigError(f"{where}.{key}: must be a non-empty path on one line, got {value!r}")
            if value.strip().startswith("-"):  # remote tools would take it for an option
                raise ConfigError(f"{where}.{key}: {value!r} starts with '-'; write it as ./{value.strip()}")
        key = fields.get("key", (str,), None)
        options = fields.get("ssh_options", (list,), [])
        for i, opt in enumerate(options):
            if not isinstance(opt, str) or "=" not in opt or opt.startswith("-"):
                raise ConfigError(f"{where}.ssh_options[{i}]: expected an ssh -o option like 'ProxyJump=gw', "
                                  f"got {_show(opt)}")
        target = SSHTarget(
            **common,
            host=host,
            user=user,
            port=port,
            key=_local_path(key) if key else None,
            python=python.strip(),
            work_dir=work_dir.strip().rstrip("/") or "/",
            known_hosts=_local_path(fields.get("known_hosts", (str,), SSHTarget.known_hosts)),
            connect_timeout=_positive(fields, "connect_timeout", 10),
            run_timeout=_positive(fields, "run_timeout", 7200),
            ssh_options=tuple(options),
            keep_job_dir=fields.get("keep_job_dir", (bool,), False),
        )
    fields.finish()
    return target


def parse_targets(data: Any, source: str = "targets") -> dict[str, Target]:
    """All targets of a config mapping (the file's top level, holding ``targets:``)."""
    if not isinstance(data, Mapping) or "targets" not in data:
        raise ConfigError(f"{source}: expected a top-level 'targets:' map")
    raw = data["targets"]
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: targets: expected a map of target names, got {_show(raw)}")
    return {name: parse_target(name, spec, source) for name, spec in raw.items()}


def load_targets(path: str | os.PathLike | None = None) -> dict[str, Target]:
    """The targets of a YAML file (``None``: :data:`DEFAULT_TARGETS_FILE` if it exists); ``local`` is always there."""
    targets: dict[str, Target] = {}
    if path is None and DEFAULT_TARGETS_FILE.exists():
        path = DEFAULT_TARGETS_FILE
    if path is not None:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as err:
            raise ConfigError(f"cannot read targets config {path}: {err.strerror or err}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        targets = parse_targets(data, str(path))
    targets.setdefault("local", LocalTarget(name="local"))
    return targets


def get_target(name: str, path: str | os.PathLike | None = None,
               targets: Mapping[str, Target] | None = None) -> Target:
    """The target called ``name``; an unknown name raises :class:`ConfigError` listing the declared ones."""
    targets = targets if targets is not None else load_targets(path)
    if name not in targets:
        src = f" in {path}" if path else ""
        raise ConfigError(f"unknown target {name!r}{src}; declared: {', '.join(sorted(targets))}")
    return targets[name]


def target_resources(name: str, path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Snakemake resources for a rule that benchmarks on ``name``.

    ``bench_<name>: 1`` (the profiles cap it at 1, so two latency jobs never share
    the device) plus, for a slurm target, its SLURM executor plugin resources::

        rule bench_point:
            resources: **target_resources("h100", "config/targets.yaml")
    """
    target = get_target(name, path)
    out: dict[str, Any] = {target.resource_name(): 1}
    if isinstance(target, SlurmTarget):
        out.update(target.resources)
    return out
