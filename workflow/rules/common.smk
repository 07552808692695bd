# Configuration helpers: which jobs exist, and the command-line arguments each one gets.
# Only name-and-path bookkeeping lives here; every computation is in the `mpm` package.

import re
import shlex
from pathlib import Path

from mpm.data.datasets import get_spec
from mpm.data.zoo import checkpoint_path
from mpm.backends import backend_names
from mpm.methods import available_methods

DATA = config["data_root"]
RESULTS = config["results"]
TRACKING_URI = config.get("tracking_uri", f"sqlite:///{RESULTS}/mlruns/mlflow.db")
INVOCATION = f"{RESULTS}/mlruns/invocation.key"
TABLES = f"{RESULTS}/tables"
FIGURES = f"{RESULTS}/figures"


def label_space(model):
    m = config["models"][model]
    return m.get("label_space", m["dataset"])


def variants(model):
    """(method, schedule name) pairs that apply to ``model``."""
    out = []
    for method, spec in config["methods"].items():
        for sched, entry in spec["schedules"].items():
            if isinstance(entry, dict) and model not in entry.get("models", [model]):
                continue
            out.append((method, sched))
    return out


def schedule_blocks(method, schedule):
    blocks = schedule_entry(method, schedule)[0]
    return "all" if blocks == "all" else ",".join(str(b) for b in blocks)


def method_args(method):
    """``--method-arg k=v`` options and the batch policy of a method."""
    spec = config["methods"][method]
    args = [f"--method-arg {shlex.quote(item)}" for item in method_arg_items(method)]
    args.append(f"--batch-policy {spec.get('batch_policy', 'exact')}")
    return " ".join(args)


def dataset_root(dataset):
    return f"{DATA}/{dataset}"


def manifest(dataset, split, space=None):
    """The manifest `mpm prepare` / `mpm synth --prepare` writes for a split."""
    if config["datasets"][dataset]["source"] == "synthetic":
        space = "synthetic"
    name = get_spec(space or dataset).manifest_name
    return f"{dataset_root(dataset)}/manifests/{name}-{split}.json"


def checkpoint(model):
    m = config["models"][model]
    if m["source"] == "zoo":
        return str(checkpoint_path(f"{DATA}/checkpoints", m["zoo"]))
    if m["source"] == "train-demo":
        return f"{RESULTS}/models/{model}.pth"
    return m["path"]


def eval_models():
    return config["evaluation"].get("models", list(config["models"]))


def eval_results():
    return [
        f"{RESULTS}/eval/{config['models'][model]['dataset']}/{model}/{method}/{sched}.json"
        for model in eval_models()
        for method, sched in variants(model)
    ]


def bench_results():
    out = []
    for point in config["benchmark"]["points"]:
        for model in point.get("models", list(config["models"])):
            for method, sched in variants(model):
                if method not in point.get("methods", list(config["methods"])):
                    continue
                for bs in point["batch_sizes"]:
                    for backend in point["backends"]:
                        for mode in point.get("modes", ["eager"]):
                            out.append(f"{RESULTS}/bench/{point['target']}/{model}/{method}/{sched}/"
                                       f"bs{bs}-{backend}-{point['dtype']}-{mode}.json")
    return out


def bench_point(target, model):
    """The benchmark.points entry that declares (target, model)."""
    for point in config["benchmark"]["points"]:
        if point["target"] == target and model in point.get("models", list(config["models"])):
            return point
    raise ValueError(f"no benchmark point for target {target!r} and model {model!r}")


def tracking_markers():
    results = eval_results() + bench_results()
    return [f"{RESULTS}/tracking/{Path(r).relative_to(RESULTS).with_suffix('')}.json" for r in results]


def bench_resources():
    """``bench_<target>=1`` for the job's own target (0 for the others): the profiles cap each at 1,
    so two timings never share a device."""
    return {f"bench_{t}": (lambda wildcards, t=t: int(wildcards.target == t)) for t in bench_targets()}


def bench_threads(target):
    """A timing on this host's CPU takes every core, so no other job runs beside it."""
    t = _TARGETS[target]
    return workflow.cores if t.type == "local" and str(t.device).startswith("cpu") else 1


def alternatives(names):
    """A wildcard regex matching exactly these names (never-matching when empty)."""
    return "|".join(re.escape(n) for n in names) or "(?!x)x"


# benchmark rules (workflow/rules/benchmark.smk)
BENCH_OUT = f"{RESULTS}/bench/{{target}}/{{model}}/{{method}}/{{schedule}}/bs{{batch}}-{{backend}}-{{dtype}}-{{mode}}.json"
BENCH_LOG = f"{RESULTS}/logs/bench/{{target}}/{{model}}/{{method}}/{{schedule}}/bs{{batch}}-{{backend}}-{{dtype}}-{{mode}}.log"
BENCH_CMD = (
    "mpm bench --target {wildcards.target} --targets-config {params.targets} --images {input.images} "
    "--model {input.checkpoint} --method {wildcards.method} --schedule={params.blocks} {params.method_args} "
    "--batch-size {wildcards.batch} --backend {wildcards.backend} --mode {wildcards.mode} --dtype {wildcards.dtype} "
    "--warmup {params.warmup} --iters {params.iters} {params.threads} "
    "--names dataset={params.dataset},model={wildcards.model},method={wildcards.method},schedule={wildcards.schedule} "
    "--out {output} > {log} 2>&1"
)


def _bench_input(w):
    dataset = config["models"][w.model]["dataset"]
    return {
        "images": manifest(dataset, config["benchmark"].get("split", "val"), label_space(w.model)),
        "checkpoint": checkpoint(w.model),
    }


def _bench_params():
    return dict(
        targets=TARGETS_CONFIG,
        blocks=lambda w: schedule_blocks(w.method, w.schedule),
        method_args=lambda w: method_args(w.method),
        dataset=lambda w: config["models"][w.model]["dataset"],
        warmup=config["benchmark"].get("warmup", 10),
        iters=config["benchmark"].get("iters", 50),
        threads=lambda w: (f"--threads {bench_point(w.target, w.model)['threads']}"
                           if "threads" in bench_point(w.target, w.model) else ""),
    )


wildcard_constraints:
    dataset="[A-Za-z0-9_.-]+",
    model="[A-Za-z0-9_.-]+",
    method=alternatives(available_methods()),
    schedule="[A-Za-z0-9_.-]+",
    target="[A-Za-z0-9_]+",
    backend=alternatives(backend_names()),
    dtype="float32|float16|bfloat16",
