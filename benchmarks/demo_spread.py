"""Spread of the offline demo's figures over training seeds, on this machine's CPU.

    python benchmarks/demo_spread.py [--config config/demo.yaml] [--seeds 0,1,2] [--threads N]
                                     [--jobs J] [--work DIR] [--out results/reference/demo]

Does what the demo DAG does for its model, once per seed, with the demo configuration's
settings: `mpm synth` (its synthetic set), `mpm train-demo` (its steps and training threads,
the seed varied), then `mpm eval` of the dense model and of every method and schedule of the
configuration on the evaluation split, with the same arguments as the pipeline's evaluate
rule. It needs only the `mpm` package and its core dependencies (no Snakemake, no MLflow).

Writes ``OUT/spread-<cpu>-<cores>c.json``: the CPU (``/proc/cpuinfo``'s model name), the
core count, the torch/timm/Python versions, the git commit, per seed the dense mIoU, each
method's ΔmIoU (method - dense, in points) and the training wall time, and per figure the
max - min spread over the seeds. Prints a short table last. The figures are measured, on
SYNTHETIC data with a model trained on it: they say how stable the demo is, not how good MPM is.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mpm.io import write_json_atomic  # noqa: E402

SCHEMA = "mpm.demo-spread/1"


# --------------------------------------------------------------------------- machine


def cpu_model() -> str:
    """``model name`` of /proc/cpuinfo (or ``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def short_cpu_name(model: str, cores: int) -> str:
    """``AMD EPYC`` with 2 cores -> ``amd-epyc-2c``; ``Intel(R) Xeon(R) ...`` -> ``intel-xeon-...``."""
    name = re.sub(r"\((r|tm|c)\)|\bcpu\b|@.*$", " ", model.lower())
    slug = re.sub(r"[^a-z0-9]+", "-", name).strip("-")[:40].strip("-") or "cpu"
    return f"{slug}-{cores}c"


def package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def git_state() -> dict:
    """The commit of the checkout and whether tracked files differ from it (None outside git)."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != ROOT:  # not a checkout of its own (a copy inside another one)
        return {"commit": None, "dirty": None}
    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if commit is None else bool(dirty)}


def code_state(commit: str | None) -> dict:
    """:func:`git_state`, or ``commit`` (said by --commit) for a copy without git."""
    state = git_state()
    if state["commit"] is None and commit:
        return {"commit": commit, "dirty": None, "commit_from": "--commit (a copy without git)"}
    if commit and state["commit"] and not state["commit"].startswith(commit):
        raise SystemExit(f"demo_spread: error: --commit {commit} but the checkout is at {state['commit']}")
    return state


def source_digest() -> str:
    """sha256 over the ``mpm`` package's Python files (identifies the code where git is absent)."""
    h = hashlib.sha256()
    for path in sorted((ROOT / "mpm").rglob("*.py")):
        h.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


# --------------------------------------------------------------------------- the demo's jobs


def demo_settings(config: dict, model: str | None) -> dict:
    """The demo model, its synthetic dataset and the evaluation variants of ``config``."""
    models = {k: v for k, v in config["models"].items() if v.get("source") == "train-demo"}
    if not models:
        raise SystemExit("demo_spread: error: the configuration has no model with source: train-demo")
    if model is None:
        model = next(iter(models))
    if model not in models:
        raise SystemExit(f"demo_spread: error: --model {model!r} is not a train-demo model "
                         f"of the configuration ({', '.join(models)})")
    entry = models[model]
    dataset = config["datasets"][entry["dataset"]]
    variants = []
    for method, spec in config["methods"].items():
        for sched, sched_entry in spec["schedules"].items():
            if isinstance(sched_entry, dict) and model not in sched_entry.get("models", [model]):
                continue
            blocks = sched_entry["blocks"] if isinstance(sched_entry, dict) else sched_entry
            variants.append({
                "name": f"{method}/{sched}", "method": method,
                "schedule": "all" if blocks == "all" else ",".join(str(b) for b in blocks),
                "method_args": [f"{k}={v}" for k, v in spec.get("args", {}).items()],
                "batch_policy": spec.get("batch_policy", "exact"),
            })
    dense = [v for v in variants if v["method"] == "none"]
    if not dense:
        raise SystemExit("demo_spread: error: the configuration evaluates no dense model (method none)")
    return {"model": model, "dataset": entry["dataset"], "synth": dict(dataset.get("synth", {})),
            "train": dict(entry.get("train", {})), "evaluation": dict(config["evaluation"]),
            "variants": variants, "dense": dense[0]["name"]}


def run_mpm(args: list[str], log: Path) -> float:
    """``python -m mpm.cli ARGS`` with its output in ``log``; returns its wall time (s)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, "-m", "mpm.cli", *args], stdout=fh, stderr=subprocess.STDOUT,
                              env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise SystemExit(f"demo_spread: error: `mpm {shlex.join(args)}` failed (exit {proc.returncode}); "
                         f"log {log}:\n  " + "\n  ".join(tail))
    return wall


def eval_args(settings: dict, variant: dict, data_root: Path, checkpoint: Path, out: Path, threads: int) -> list[str]:
    """The arguments of the pipeline's evaluate rule (workflow/rules/evaluate.smk)."""
    ev = settings["evaluation"]
    args = ["eval", "--data-root", str(data_root), "--dataset", "synthetic", "--split", ev["split"],
            "--checkpoint", str(checkpoint), "--method", variant["method"], f"--schedule={variant['schedule']}"]
    for item in variant["method_args"]:
        args += ["--method-arg", item]
    args += ["--batch-policy", variant["batch_policy"], "--backend", ev.get("backend", "math"),
             "--dtype", ev.get("dtype", "float32"), "--device", ev.get("device", "cpu"),
             "--batch-size", str(ev.get("batch_size", 1)), "--threads", str(threads)]
    if ev.get("limit"):
        args += ["--limit", str(ev["limit"])]
    return args + ["--out", str(out), "--no-progress"]


def spread(values: list[float]) -> float:
    return max(values) - min(values)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "config" / "demo.yaml"), help="demo configuration (default config/demo.yaml)")
    p.add_argument("--model", default=None, help="train-demo model of the configuration (default: the first)")
    p.add_argument("--seeds", default="0,1,2", help="training seeds (default 0,1,2)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of each training (default: the configuration's models.MODEL.train.threads)")
    p.add_argument("--eval-threads", type=int, default=None,
                   help="torch threads of each evaluation (default: the configuration's evaluation.threads)")
    p.add_argument("--jobs", type=int, default=1,
                   help="trainings / evaluations run at once (default 1; the figures do not depend on it)")
    p.add_argument("--work", default=None, help="folder for the synthetic set, checkpoints and logs (default: a temporary one)")
    p.add_argument("--out", default=str(ROOT / "results" / "reference" / "demo"),
                   help="folder of the result file spread-<cpu>-<cores>c.json (default results/reference/demo)")
    p.add_argument("--tolerance", type=float, default=0.5, help="spread (points) the figures should stay within (default 0.5)")
    p.add_argument("--commit", default=None,
                   help="commit to record when the checkout is a copy without git (a git checkout records its own)")
    p.add_argument("--compare", nargs="+", default=None, metavar="SPREAD_JSON",
                   help="run nothing: print the spread over all seeds of these result files (other CPUs) together")
    return p.parse_args(argv)


def compare(paths: list[str], tolerance: float) -> int:
    """Print the figures of several result files (machines) side by side and their overall spread."""
    records = []
    for path in paths:
        try:
            rec = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise SystemExit(f"demo_spread: error: cannot read {path}: {err}") from None
        if rec.get("schema") != SCHEMA:
            raise SystemExit(f"demo_spread: error: {path} is not a {SCHEMA} file")
        records.append((path, rec))
    first_path, first = records[0]
    keys = ("synth", "train", "evaluation")
    for path, rec in records[1:]:
        for key in keys:
            if {k: v for k, v in rec["settings"][key].items() if k != "threads"} != \
                    {k: v for k, v in first["settings"][key].items() if k != "threads"}:
                raise SystemExit(f"demo_spread: error: {path} and {first_path} differ in settings.{key}: "
                                 "their figures are not comparable")
        if rec["methods"] != first["methods"] or rec["dense"] != first["dense"]:
            raise SystemExit(f"demo_spread: error: {path} and {first_path} evaluate different methods")
    methods = first["methods"]
    rows = [(f"{rec['machine']['cpu_model']} ({rec['machine']['cores']}c) seed {seed}", res)
            for _, rec in records for seed, res in rec["per_seed"].items()]
    width = max(len(label) for label, _ in rows) + 2
    cols = [max(9, len(m) + 4) for m in methods]
    print(f"{'':<{width}}{'dense':>8}" + "".join(f"{'Δ ' + m:>{c}}" for m, c in zip(methods, cols)))
    for label, res in rows:
        print(f"{label:<{width}}{res['dense_mIoU']:8.2f}"
              + "".join(f"{res['delta_mIoU'][m]:+{c}.2f}" for m, c in zip(methods, cols)))
    spreads = [spread([res["dense_mIoU"] for _, res in rows])]
    spreads += [spread([res["delta_mIoU"][m] for _, res in rows]) for m in methods]
    print(f"{'spread (max - min)':<{width}}{spreads[0]:8.2f}" + "".join(f"{v:{c}.2f}" for v, c in zip(spreads[1:], cols)))
    worst = max(spreads)
    print(f"largest spread over {len(rows)} runs on {len(records)} machine(s): {worst:.2f} points, "
          f"{'within' if worst <= tolerance else 'OUTSIDE'} the {tolerance:g}-point tolerance")
    return 0 if worst <= tolerance else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.compare:
        return compare(args.compare, args.tolerance)
    t_start = time.perf_counter()
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"demo_spread: error: --seeds {args.seeds!r}: expected comma-separated integers") from None
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise SystemExit(f"demo_spread: error: --seeds {args.seeds!r}: give at least two distinct seeds")
    if args.jobs < 1 or (args.threads is not None and args.threads < 1) or (args.eval_threads is not None and args.eval_threads < 1):
        raise SystemExit("demo_spread: error: --jobs, --threads and --eval-threads must be >= 1")
    config_path = Path(args.config)
    try:
        config = yaml.safe_load(config_path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise SystemExit(f"demo_spread: error: cannot read --config {config_path}: {err}") from None
    settings = demo_settings(config, args.model)
    steps = settings["train"].get("steps")
    threads = args.threads or settings["train"].get("threads") or 2
    eval_threads = args.eval_threads or settings["evaluation"].get("threads") or 1

    # check the arguments and the output before the long work; the code is recorded as it starts
    code = {**code_state(args.commit), "mpm_source_sha256": source_digest()}
    model_name, cores = cpu_model(), cpu_count()
    out_dir = Path(args.out)
    out_file = out_dir / f"spread-{short_cpu_name(model_name, cores)}.json"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".spread-check."):
            pass
    except OSError as err:
        raise SystemExit(f"demo_spread: error: cannot write to --out {out_dir}: {err}") from None

    work_tmp = None if args.work else tempfile.TemporaryDirectory(prefix="mpm-demo-spread-")
    work = Path(args.work or work_tmp.name)
    data_root = work / "data" / settings["dataset"]
    print(f"demo_spread: {model_name} ({cores} cores), seeds {seeds}, {steps or 'default'} steps, "
          f"train threads {threads}, eval threads {eval_threads}, {args.jobs} job(s) at once, work {work}",
          file=sys.stderr, flush=True)

    synth = ["synth", "--root", str(data_root), "--prepare"]
    for key, value in settings["synth"].items():
        synth += [f"--{key.replace('_', '-')}", str(value)]
    synth_s = run_mpm(synth, work / "logs" / "synth.log")

    def train(seed: int) -> dict:
        ckpt = work / "models" / f"seed{seed}.pth"
        cmd = ["train-demo", "--data-root", str(data_root), "--out", str(ckpt), "--seed", str(seed),
               "--threads", str(threads), "--no-progress"] + (["--steps", str(steps)] if steps else [])
        wall = run_mpm(cmd, work / "logs" / f"train-seed{seed}.log")
        side = json.loads(ckpt.with_name(ckpt.name + ".json").read_text())
        print(f"demo_spread: seed {seed} trained: {side['steps_done']} steps in {wall:.0f} s", file=sys.stderr, flush=True)
        return {"checkpoint": ckpt, "wall_s": wall, "sidecar": side}

    def evaluate(job: tuple[int, dict]) -> tuple[int, str, dict]:
        seed, variant = job
        out = work / "eval" / f"seed{seed}" / (variant["name"].replace("/", "--") + ".json")
        wall = run_mpm(eval_args(settings, variant, data_root, trained[seed]["checkpoint"], out, eval_threads),
                       work / "logs" / f"eval-seed{seed}-{variant['name'].replace('/', '--')}.log")
        rec = json.loads(out.read_text())
        if not rec.get("complete", True) or rec.get("partial"):
            raise SystemExit(f"demo_spread: error: {out} is a partial evaluation")
        return seed, variant["name"], {"mIoU": rec["metrics"]["mIoU"], "wall_s": wall}

    try:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            trained = dict(zip(seeds, pool.map(train, seeds)))
            jobs = [(seed, v) for seed in seeds for v in settings["variants"]]
            evals = list(pool.map(evaluate, jobs))
    finally:
        if work_tmp is not None:
            work_tmp.cleanup()

    names = [v["name"] for v in settings["variants"]]
    miou = {seed: {} for seed in seeds}
    eval_wall = {seed: {} for seed in seeds}
    for seed, name, res in evals:
        miou[seed][name] = res["mIoU"]
        eval_wall[seed][name] = res["wall_s"]
    dense = settings["dense"]
    methods = [n for n in names if n != dense]
    per_seed = {}
    for seed in seeds:
        side = trained[seed]["sidecar"]
        per_seed[str(seed)] = {
            "dense_mIoU": miou[seed][dense],
            "mIoU": miou[seed],
            "delta_mIoU": {n: miou[seed][n] - miou[seed][dense] for n in methods},
            "steps_done": side["steps_done"],
            "final_loss": side["loss"].get("mean_last_10pct"),
            "train_wall_s": {"command": trained[seed]["wall_s"], "training_loop": side["wall_time_s"]["train"]},
            "checkpoint_sha256": side["checkpoint"]["sha256"],
            "eval_wall_s": eval_wall[seed],
        }
    spreads = {"dense_mIoU": spread([miou[s][dense] for s in seeds])}
    spreads.update({f"delta_mIoU/{n}": spread([miou[s][n] - miou[s][dense] for s in seeds]) for n in methods})
    worst = max(spreads.values())
    first_side = trained[seeds[0]]["sidecar"]
    record = {
        "schema": SCHEMA,
        "synthetic": True,
        "note": ("Demo figures over training seeds on one machine: SYNTHETIC data (mpm synth), a Seg-T/16 trained "
                 "on it by mpm train-demo; mIoU in percent, delta = method - dense in points."),
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "python benchmarks/demo_spread.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpu_model": model_name, "cores": cores, "platform": platform.platform(),
                    "python": platform.python_version(), "torch": package_version("torch"),
                    "timm": package_version("timm"), "numpy": package_version("numpy")},
        "code": code,
        "settings": {
            "config": str(config_path), "model": settings["model"], "synth": settings["synth"],
            "train": {**{k: first_side["training"][k] for k in ("steps", "batch_size", "train_crop", "lr", "min_lr",
                                                                   "warmup_steps", "weight_decay", "beta2", "grad_clip")
                         if k in first_side["training"]},
                      "threads": threads},
            "evaluation": {**settings["evaluation"], "threads": eval_threads},
            "seeds": seeds, "jobs": args.jobs,
        },
        "dense": dense,
        "methods": methods,
        "per_seed": per_seed,
        "spread": spreads,
        "tolerance": args.tolerance,
        "within_tolerance": worst <= args.tolerance,
        "wall_time_s": {"synth": synth_s, "total": time.perf_counter() - t_start},
    }
    write_json_atomic(out_file, record)

    width = max(len(n) for n in ["dense mIoU", *(f"Δ {n}" for n in methods)]) + 2
    head = "".join(f"{f'seed {s}':>9}" for s in seeds) + f"{'spread':>9}"
    print(f"\nwrote {out_file}")
    print(f"demo spread on {model_name} ({cores} cores), torch {record['machine']['torch']}, "
          f"{record['settings']['train'].get('steps')} steps, {threads} training thread(s)")
    print(f"{'':<{width}}{head}")
    print(f"{'dense mIoU':<{width}}" + "".join(f"{miou[s][dense]:9.2f}" for s in seeds) + f"{spreads['dense_mIoU']:9.2f}")
    for n in methods:
        print(f"{'Δ ' + n:<{width}}" + "".join(f"{miou[s][n] - miou[s][dense]:+9.2f}" for s in seeds)
              + f"{spreads[f'delta_mIoU/{n}']:9.2f}")
    print(f"{'train wall (s)':<{width}}" + "".join(f"{trained[s]['wall_s']:9.0f}" for s in seeds))
    print(f"largest spread {worst:.2f} points: {'within' if worst <= args.tolerance else 'OUTSIDE'} "
          f"the {args.tolerance:g}-point tolerance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
