"""``mpm bench``: time one benchmark point on a target declared in config (this host, a SLURM GPU node, a Pi over SSH).

Also runnable as ``python -m mpm.cli.bench ...`` (what the SSH runner calls on the
remote host: it needs only torch, timm, numpy, pillow and pyyaml there, not the
download dependencies of the other commands).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mpm.cli._args import (
    Parser,
    add_merge_options,
    check_device,
    count,
    input_file,
    int_pair,
    method_schedule,
    output_file,
    parse_int_pair,
    parse_method_args,
    positive_number,
)
from mpm.errors import ConfigError
from mpm.records import BenchRecord
from mpm.records.names import NAMES_HELP, names_argument

#: spec fields settable from the command line: option dest -> BenchSpec field
_SPEC_OPTIONS = ("images", "model", "num_classes", "crop", "method", "schedule", "method_kwargs", "batch_policy",
                 "batch_size", "backend", "mode", "dtype", "device", "threads", "warmup", "iters", "breakdown_iters",
                 "pool_batches", "seed", "names")




def parse_crop(text: str) -> tuple[int, int]:
    """``"512"`` -> (512, 512); ``"512,1024"`` / ``"512x1024"`` -> (512, 1024) (H, W)."""
    return parse_int_pair(text, "--crop", _CROP_EXAMPLE, single=True)


_CROP_EXAMPLE = "SIZE or H,W, e.g. 512 or 512,1024"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    t = parser.add_argument_group("target")
    t.add_argument("--target", default="local",
                   help="target name declared in the targets config (default local: this host)")
    t.add_argument("--targets-config", default=None, metavar="YAML", type=input_file,
                   help="YAML file with a top-level `targets:` map (default config/targets.yaml if it exists; "
                        "`local` is always available)")
    t.add_argument("--runtime", default="torch", choices=("torch", "onnxruntime"),
                   help="torch (default) or onnxruntime (float32; merging methods run as segments between "
                        "their merge sites, token counts per image as in PyTorch)")
    t.add_argument("--cooldown-max-temp", type=float, default=None, metavar="C",
                   help="wait until the SoC is at or below C °C before the point (overrides the target's cooldown)")
    t.add_argument("--cooldown-poll", type=positive_number, default=None, metavar="S",
                   help="cooldown poll interval (5 s)")
    t.add_argument("--cooldown-timeout", type=positive_number, default=None, metavar="S",
                   help="give up when still hot after S seconds (600 s)")
    t.add_argument("--list-targets", action="store_true", help="list the declared targets and exit")
    t.add_argument("--check", action="store_true",
                   help="check the target's environment (ssh: probe the remote python and its packages) and exit")

    p = parser.add_argument_group("benchmark point")
    p.add_argument("--spec", default=None, metavar="JSON", type=input_file,
                   help="a BenchSpec as JSON (BenchSpec.to_dict()); the options below override its fields")
    p.add_argument("--images", default=None,
                   help="image folder (searched recursively), one image file, or skimage:photos (scikit-image's "
                        "bundled photographs, mirrored and cropped into up to 32 distinct images)")
    p.add_argument("--model", default=None, help="T | S | B | L (random weights) or a checkpoint file (default T)")
    p.add_argument("--num-classes", type=count(1), default=None, help="classes of a random-init model (default 150)")
    p.add_argument("--crop", type=int_pair(_CROP_EXAMPLE, single=True), default=None, metavar="H[,W]",
                   help="input size (default: the model's, 512 or 640 for L)")
    add_merge_options(p)  # --method --schedule --method-arg --batch-policy --backend, as `mpm eval`
    p.add_argument("--batch-size", type=count(1), default=None, metavar="N", help="images per forward (default 1)")
    p.add_argument("--mode", default=None, choices=("eager", "graphs"),
                   help="execution mode: eager (default) or graphs (CUDA graphs, one per token-count bucket)")
    p.add_argument("--dtype", default=None, choices=("float32", "float16", "bfloat16"))
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: the target's device)")
    p.add_argument("--threads", type=count(1), default=None, metavar="N",
                   help="torch CPU threads (default: the target's threads)")
    p.add_argument("--warmup", type=count(0), default=None, help="untimed forwards first (default 10)")
    p.add_argument("--iters", type=count(1), default=None, help="timed forwards (default 50)")
    p.add_argument("--breakdown-iters", type=count(0), default=None, help="forwards timed per section (default 10)")
    p.add_argument("--pool-batches", type=count(1), default=None, help="distinct batches cycled through (default 4)")
    p.add_argument("--seed", type=int, default=None, help="seed of random-init weights (default 0)")
    p.add_argument("--names", type=names_argument, default=None, metavar="KEY=NAME,...", help=NAMES_HELP)
    p.add_argument("--out", default=None, metavar="RESULT.json", type=output_file,
                   help="result JSON (schema mpm.bench/1), written atomically when the point is complete")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench", help="time one benchmark point on a target (local, slurm GPU node, ssh board)",
        description="Time one benchmark point (model, method, schedule, batch size, backend, dtype) on a target "
                    "declared in a targets config: `local` (this host), `slurm` (run inside a SLURM job through the "
                    "workflow's slurm profile) or `ssh` (the job is shipped to the host, run there, fetched back). "
                    "Writes one JSON (schema mpm.bench/1) atomically when the run is complete; a failed run "
                    "writes nothing and leaves an earlier output untouched.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def build_spec(args, target) -> "Any":
    """The BenchSpec of the command line: --spec file, then options, then target defaults."""
    from mpm.benchmarking.bench import BenchSpec

    data: dict[str, Any] = {}
    if args.spec:
        try:
            data = json.loads(Path(args.spec).read_text())
        except OSError as err:
            raise ConfigError(f"--spec {args.spec}: cannot read: {err.strerror or err}") from None
        except ValueError as err:
            raise ConfigError(f"--spec {args.spec}: not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"--spec {args.spec}: expected a JSON object")
    given = {name: getattr(args, name, None) for name in _SPEC_OPTIONS if getattr(args, name, None) is not None}
    if args.method_args:
        given["method_kwargs"] = parse_method_args(args.method_args)
    schedule_from_file = "schedule" in data and args.method is None
    data.update(given)
    if args.spec is None:
        data.setdefault("backend", "math")
        data.setdefault("device", target.device)
    if "method" in data:
        data["method"] = str(data["method"]).strip().lower()
    # no --schedule: the method's default (MPM(2,5)), unless a --spec file fixes it for its own method;
    # a schedule the method ignores (--method none --schedule 2,5) is refused
    given = None if args.schedule is None and not schedule_from_file else data.get("schedule")
    data["schedule"] = method_schedule(data.get("method", "none"), given, data.get("method_kwargs"))
    if data.get("images") is None:
        raise ConfigError("--images is required (or an `images` entry in --spec)")
    for key in ("batch_size", "iters", "pool_batches", "num_classes"):
        if key in data and data[key] is not None and data[key] < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be >= 1, got {data[key]}")
    return BenchSpec.from_dict(data)


def _cooldown(args):
    from mpm.benchmarking.cooldown import CooldownConfig

    if args.cooldown_max_temp is None:
        if args.cooldown_poll is not None or args.cooldown_timeout is not None:
            raise ConfigError("--cooldown-poll/--cooldown-timeout need --cooldown-max-temp")
        return None
    return CooldownConfig(max_temp_c=args.cooldown_max_temp,
                          poll_s=args.cooldown_poll if args.cooldown_poll is not None else 5.0,
                          timeout_s=args.cooldown_timeout if args.cooldown_timeout is not None else 600.0)


def run(args) -> int:
    from mpm.benchmarking.running import run_target
    from mpm.benchmarking.targets import SSHTarget, get_target, load_targets

    targets = load_targets(args.targets_config)
    if args.list_targets:
        for name, target in sorted(targets.items()):
            extra = f" {target.address}" if isinstance(target, SSHTarget) else f" device={target.device}"
            print(f"{name}: {target.type}{extra}" + (f" — {target.description}" if target.description else ""))
        return 0
    target = get_target(args.target, args.targets_config, targets)
    if args.check:
        return _check(target, args.runtime)
    if not args.out:
        raise ConfigError("--out is required")
    spec = build_spec(args, target)
    if not isinstance(target, SSHTarget):  # an ssh target checks its device on the board
        check_device(spec.device)
    if args.runtime == "onnxruntime" and spec.mode != "eager":
        raise ConfigError("--mode graphs runs the torch runtime only (ONNX Runtime has its own execution)")
    try:
        result = run_target(target, spec, args.out, runtime=args.runtime, cooldown=_cooldown(args))
    except KeyboardInterrupt:
        kept = f"; the earlier {args.out} is unchanged" if Path(args.out).exists() else ""
        print(f"mpm bench: interrupted, nothing written{kept}", file=sys.stderr)
        return 130
    timing, tokens = result["timing"], result["tokens"]
    left = ",".join(f"{v:.0f}" for v in tokens.get("after_step_mean", [])) or "-"
    print(f"{target.name}: {spec.model} {BenchRecord(result).names.method_schedule} "
          f"bs={spec.batch_size} {spec.backend}/{spec.dtype} on {result['environment'].get('device_name')}: "
          f"{timing['per_image_ms']:.2f} ms/img, {timing['images_per_s']:.2f} img/s, "
          f"tokens {tokens['full']} -> {left}")
    print(f"wrote {args.out}")
    return 0


def _check(target, runtime: str) -> int:
    from mpm.benchmarking.targets import SSHTarget, SlurmTarget

    if isinstance(target, SSHTarget):
        from mpm.benchmarking.remote import check_target

        info = check_target(target, runtime)
        print(json.dumps({"target": target.name, "address": target.address, **info}, indent=1))
        return 0
    if isinstance(target, SlurmTarget):
        target.check_allocation()
    import torch

    from mpm.environment import describe_environment

    if runtime == "onnxruntime":
        from mpm.benchmarking.onnx import _import_onnxruntime

        _import_onnxruntime()
    device = torch.device(target.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"target {target.name!r}: device {target.device} but CUDA is not available here")
    print(json.dumps({"target": target.name, **describe_environment(device)}, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m mpm.cli.bench``: the bench command alone (few dependencies)."""
    from mpm.cli import run_command

    def build() -> argparse.ArgumentParser:
        parser = Parser(prog="mpm bench", description=__doc__.splitlines()[0])
        add_arguments(parser)
        parser.set_defaults(func=run)
        return parser

    return run_command(build, argv, "mpm bench")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
