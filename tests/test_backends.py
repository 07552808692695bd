"""One backend registry (mpm.backends): the attention code, the encoder, the ONNX export, the patch API, the CLI,
the tables and the workflow read it, and no other file lists the backends."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from mpm.backends import backend_names, backends, cuda_labels, exportable_backends, get_backend, varlen_backends
from mpm.cli import build_parser
from mpm.errors import BackendError

REPO = Path(__file__).resolve().parents[1]


def test_readers_take_the_registry():
    from mpm.benchmarking.onnx_export import EXPORTABLE_BACKENDS
    from mpm.models.attention import BACKENDS
    from mpm.models.encoder import VARLEN_BACKENDS
    from mpm.tables.bench import CUDA_BACKEND_LABELS

    assert BACKENDS == backend_names() == ("math", "sdpa", "fa2", "triton", "flash-attn")
    assert VARLEN_BACKENDS == varlen_backends() == ("fa2", "triton", "flash-attn")
    assert EXPORTABLE_BACKENDS == exportable_backends() == ("math", "sdpa")
    assert CUDA_BACKEND_LABELS == cuda_labels() == {"math": "FA2 off", "fa2": "FA2 on", "triton": "Triton FA"}


def test_attention_checks_what_the_registry_says():
    from mpm.models.attention import check_backend

    for b in backends():
        if not b.devices and not b.half_only:
            check_backend(b.name, "cpu", torch.float32)
        else:
            with pytest.raises(BackendError, match="needs a CUDA device"):
                check_backend(b.name, "cpu", torch.float32)
    with pytest.raises(BackendError, match="unknown attention backend 'xla'; expected one of math, sdpa"):
        get_backend("xla")
    with pytest.raises(BackendError, match="unknown attention backend 'xla'"):
        check_backend("xla", "cpu", torch.float32)


@pytest.mark.parametrize("command", ["eval", "bench"])
def test_cli_choices_are_the_registry(command):
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    actions = {a.dest: a for a in sub._actions}
    assert tuple(actions["backend"].choices) == backend_names()


def test_the_merge_options_are_declared_once():
    """`mpm eval` and `mpm bench` have the same merge options (help, choices, types): add_merge_options."""
    subs = build_parser()._subparsers._group_actions[0].choices

    def options(command):
        return {a.dest: (a.option_strings, a.type, a.choices, a.help) for a in subs[command]._actions
                if a.dest in ("method", "schedule", "method_args", "batch_policy", "backend")}

    assert options("eval").keys() == options("bench").keys() == {"method", "schedule", "method_args",
                                                                  "batch_policy", "backend"}
    eval_opts, bench_opts = options("eval"), options("bench")
    for dest in eval_opts:  # the defaults differ (bench: a --spec file may fill them), nothing else
        assert eval_opts[dest][:3] == bench_opts[dest][:3]


def test_the_schema_leaves_backends_to_the_registry():
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    props = schema["properties"]
    assert "enum" not in props["evaluation"]["properties"]["backend"]
    assert "enum" not in props["benchmark"]["properties"]["points"]["items"]["properties"]["backends"]["items"]


#: two backend names next to each other in a list, enum, tuple or regex alternation
_LISTED = re.compile(r"""\bmath["']?\s*[,|]\s*["']?sdpa\b|\bfa2["']?\s*[,|]\s*["']?flash-attn\b""")


def test_no_other_file_lists_the_backends():
    found = []
    files = [*(REPO / "mpm").rglob("*.py"), *(REPO / "workflow").rglob("*.smk"), *(REPO / "workflow").rglob("*.yaml"),
             REPO / "workflow" / "Snakefile"]
    for path in sorted(files):
        if path == REPO / "mpm" / "backends.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if _LISTED.search(line):
                found.append(f"{path.relative_to(REPO)}:{i}: {line.strip()}")
    assert not found, "\n".join(found)
