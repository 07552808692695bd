# Start-up checks: the schema, then what it cannot express (cross-references, schedules against each
# model's depth, method parameters against the merge-method specs (mpm.methods), backends against the
# backend registry (mpm.backends), benchmark targets, one timing per device). Every problem is one line naming its key path; no traceback, nothing runs (-n and --lint too).

import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate
from snakemake_interface_executor_plugins.settings import ExecMode

from mpm.backends import backend_names
from mpm.benchmarking.targets import load_targets
from mpm.cli._args import parse_method_args
from mpm.data.zoo import get_entry
from mpm.errors import MPMError
from mpm.methods import available_methods, identify  # torch-free: the workflow parses without torch

SCHEMA = "../schemas/config.schema.yaml"
TARGETS_CONFIG = config.get("targets_config", "config/targets.yaml")


def config_errors_exit(errors):
    """Stop with one line per problem (the configuration files last) and no traceback."""
    files = ", ".join(map(str, workflow.configfiles)) or "config/demo.yaml"
    for line in dict.fromkeys(errors):
        print(line, file=sys.stderr)
    print(f"(configuration: {files}; schema: workflow/schemas/config.schema.yaml)", file=sys.stderr)
    sys.exit(1)


def _problem(err):
    """An exception's message as one line."""
    return " ".join(str(err).split()) or type(err).__name__


def _closest(error):
    """Of a oneOf / anyOf error, the failure of the alternative that came closest: the deepest key, and
    a failed constraint rather than a wrong type."""
    leaves, todo = [], [error]
    while todo:
        e = todo.pop()
        if e.context:
            todo.extend(e.context)
        else:
            leaves.append(e)
    return max(leaves, key=lambda e: (len(e.absolute_path), e.validator not in ("type", "const", "enum")))


def _validate_schema():
    try:
        validate(config, SCHEMA)
    except WorkflowError as err:
        cause = err.__context__  # the jsonschema ValidationError
        if not hasattr(cause, "absolute_path"):
            raise
        cause = _closest(cause)
        path = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in cause.absolute_path).lstrip(".")
        config_errors_exit([f"config {path or '(top level)'}: {_problem(cause.message)}"])


_validate_schema()


#: encoder blocks of each ViT size (mpm.models.segmenter.VIT_SIZES; tests/workflow checks they agree,
#: the workflow does not import the model code at parse time)
VIT_DEPTH = {"T": 12, "S": 12, "B": 12, "L": 24}


def method_arg_items(method):
    """A method's ``args`` as the jobs' ``--method-arg KEY=VALUE`` items."""
    return [f"{k}={v}" for k, v in config["methods"][method].get("args", {}).items()]


def method_kwargs(method):
    """The parameters a job's merge method gets: its --method-arg items through the `mpm` CLI's parser."""
    return parse_method_args(method_arg_items(method))


def schedule_entry(method, schedule):
    """(blocks, models or None, key path of the blocks) of one schedule of a method."""
    entry = config["methods"][method]["schedules"][schedule]
    key = f"methods.{method}.schedules.{schedule}"
    if isinstance(entry, dict):
        return entry["blocks"], entry.get("models"), f"{key}.blocks"
    return entry, None, key


def _check_method(method, errors):
    """A method's args and schedules against what the registered merge method accepts, for the depth of
    every model a schedule applies to: the constructor and checks `mpm eval` / `mpm bench` run."""
    spec = config["methods"][method]
    policy = spec.get("batch_policy", "exact")
    try:
        kwargs = method_kwargs(method)
    except MPMError as err:
        errors.append(f"config methods.{method}.args: {_problem(err)}")
        return

    def fails(blocks, depth, **given):
        try:
            identify(method, blocks, depth=depth, batch_policy=policy, **given)
        except MPMError as err:
            text = _problem(err)
            return text if text.startswith((f"{method}:", "bad parameters")) else f"{method}: {text}"
        return None

    for sched in spec["schedules"]:
        blocks, models, key = schedule_entry(method, sched)
        for model in models or list(config["models"]):
            if model not in config["models"]:
                continue  # named by _check_config
            depth = VIT_DEPTH[config["models"][model]["size"]]
            beyond = [b for b in ([] if blocks == "all" else blocks) if b >= depth]
            if beyond:
                what = f"block {beyond[0]} is" if len(beyond) == 1 else f"blocks {beyond} are"
                errors.append(f"config {key}: {what} beyond the depth of model {model} ({depth} blocks)")
                continue
            problem = fails(blocks, depth, **kwargs)
            if problem is None:
                continue
            # name the parameter at fault when one alone fails on this schedule, else the schedule
            alone = {k: fails(blocks, depth, **{k: v}) for k, v in kwargs.items()}
            named = [f"config methods.{method}.args.{k}: {p}" for k, p in alone.items() if p]
            errors.extend(named or [f"config {key}: {problem} (model {model}, {depth} blocks)"])


def _check_config():
    """Cross-references the schema cannot express; every error names its key path."""
    errors = []
    for name, m in config["models"].items():
        if m["dataset"] not in config["datasets"]:
            errors.append(f"config models.{name}.dataset: {m['dataset']!r} is not a key of datasets")
        if m["source"] == "zoo":
            try:
                entry = get_entry(m.get("zoo", ""))
            except MPMError as err:
                errors.append(f"config models.{name}.zoo: {_problem(err)}")
            else:
                if entry.backbone != m["size"]:
                    errors.append(f"config models.{name}.size: {m['size']!r}, but zoo entry {entry.name} is a "
                                  f"ViT-{entry.backbone} ({VIT_DEPTH[entry.backbone]} blocks)")
        if m["source"] == "file" and not m.get("path"):
            errors.append(f"config models.{name}: source 'file' needs a 'path'")
        if (m["source"] == "train-demo" and m["dataset"] in config["datasets"]
                and config["datasets"][m["dataset"]]["source"] != "synthetic"):
            errors.append(f"config models.{name}: train-demo needs a synthetic dataset")
        if m["source"] == "train-demo" and m["size"] != "T":
            errors.append(f"config models.{name}.size: train-demo trains a Seg-T/16, not {m['size']!r}")
    for method, spec in config["methods"].items():
        if method not in available_methods():
            errors.append(f"config methods.{method}: not a registered merge method ({', '.join(available_methods())})")
            continue
        for sched, entry in spec["schedules"].items():
            for model in entry.get("models", []) if isinstance(entry, dict) else []:
                if model not in config["models"]:
                    errors.append(f"config methods.{method}.schedules.{sched}.models: unknown model {model!r}")
        _check_method(method, errors)
    known = backend_names()
    backend = config["evaluation"].get("backend")
    if backend is not None and backend not in known:
        errors.append(f"config evaluation.backend: {backend!r} is not one of {list(known)}")
    for i, point in enumerate(config["benchmark"]["points"]):
        for j, backend in enumerate(point["backends"]):
            if backend not in known:
                errors.append(f"config benchmark.points[{i}].backends[{j}]: {backend!r} is not one of {list(known)}")
    for model in config["evaluation"].get("models", []):
        if model not in config["models"]:
            errors.append(f"config evaluation.models: unknown model {model!r}")
    for i, point in enumerate(config["benchmark"]["points"]):
        for model in point.get("models", []):
            if model not in config["models"]:
                errors.append(f"config benchmark.points[{i}].models: unknown model {model!r}")
        for method in point.get("methods", []):
            if method not in config["methods"]:
                errors.append(f"config benchmark.points[{i}].methods: unknown method {method!r}")
    if "targets_config" in config and not Path(TARGETS_CONFIG).is_file():
        errors.append(f"config targets_config: {TARGETS_CONFIG} is not a file (paths are taken from {Path.cwd()})")
    if errors:
        config_errors_exit(errors)


_check_config()


def bench_targets():
    return sorted({p["target"] for p in config["benchmark"]["points"]})


def _load_targets():
    try:
        targets = load_targets(TARGETS_CONFIG if Path(TARGETS_CONFIG).exists() else None)
    except MPMError as err:
        config_errors_exit([f"config targets_config: {_problem(err)}"])
    errors = [f"config benchmark.points[{i}].target: {p['target']!r} is not declared in {TARGETS_CONFIG} "
              f"(declared: {', '.join(sorted(targets))})"
              for i, p in enumerate(config["benchmark"]["points"]) if p["target"] not in targets]
    if errors:
        config_errors_exit(errors)
    return targets


_TARGETS = _load_targets()
SSH_TARGETS = [t for t in bench_targets() if _TARGETS[t].type == "ssh"]
HOST_TARGETS = [t for t in bench_targets() if _TARGETS[t].type != "ssh"]


def _check_device_caps():
    """One timing per device: the scheduler must cap resource bench_<target> at 1 for every timed target
    of type local or ssh (this host, a board).

    The caps are in the workflow profile, workflow/profiles/default (Snakemake loads it for
    workflow/Snakefile; --workflow-profile replaces it, --resources replaces its caps). A SLURM target is
    left to its allocation (the executor is not known while the workflow is parsed; the default profile
    caps it too, for runs inside one allocation). Inside a job nothing is scheduled: nothing to check.
    """
    if workflow.exec_mode != ExecMode.DEFAULT:
        return
    missing = []
    for t in bench_targets():
        if _TARGETS[t].type == "slurm":
            continue
        cap = workflow.global_resources.get(f"bench_{t}")
        if cap is None or cap.value != 1:
            missing.append(f"bench_{t}=1")
    if missing:
        caps = ", ".join(f"{k}={v.value}" for k, v in workflow.global_resources.items() if not k.startswith("_"))
        print(f"benchmark targets: {' and '.join(m.split('=')[0] for m in missing)} not capped at 1 (caps: "
              f"{caps or 'none'}), so two timings could share a device. Run from the repository root, where "
              "Snakemake loads the workflow profile workflow/profiles/default (add a line there for a new target), "
              f"or add --resources {' '.join(missing)} (--resources replaces the profile's caps)", file=sys.stderr)
        sys.exit(1)


_check_device_caps()


