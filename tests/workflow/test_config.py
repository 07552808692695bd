"""Start-up validation: a bad configuration stops `snakemake -n` with the key path, never a traceback."""

from __future__ import annotations

import re

import pytest

from mpm.models.segmenter import VIT_SIZES


def _schedule(cfg, blocks):
    cfg["methods"]["mpm"]["schedules"]["2-99"] = blocks


def _tome(cfg, **args):
    cfg["methods"]["tome"] = {"args": args, "schedules": {"all": "all"}}


def _algm(cfg, **args):
    cfg["methods"]["algm"] = {"args": args, "schedules": {"published": [0, 4]}}


BAD = {
    "block beyond depth": (lambda c: _schedule(c, [2, 99]),
                           "config methods.mpm.schedules.2-99: block 99 is beyond the depth of model seg-t-demo "
                           "(12 blocks)"),
    "blocks beyond depth, per-model entry": (
        lambda c: c["methods"]["mpm"]["schedules"].update({"late": {"blocks": [12, 13], "models": ["seg-t-demo"]}}),
        "config methods.mpm.schedules.late.blocks: blocks [12, 13] are beyond the depth of model seg-t-demo"),
    "ToMe r < 0": (lambda c: _tome(c, r=-3), "config methods.tome.args.r: tome: r must be >= 0, got -3"),
    "ToMe r list against the schedule": (lambda c: _tome(c, r=[1, 2, 3]),
                                         "config methods.tome.args.r: tome: r has 3 entries but the schedule has 12"),
    "unknown parameter": (lambda c: _tome(c, q=1), "config methods.tome.args.q: bad parameters for merge method "
                                                   "'tome'"),
    "ALGM threshold not a number": (lambda c: _algm(c, local_threshold="high"),
                                    "config methods.algm.args.local_threshold: algm: could not convert"),
    "ALGM window": (lambda c: _algm(c, window=[1, 1]), "config methods.algm.args.window: algm: window must be"),
    "unregistered method": (lambda c: c["methods"].update({"nope": {"schedules": {"x": [1]}}}),
                            "config methods.nope: not a registered merge method"),
    "schema: enum": (lambda c: c["evaluation"].update(split="test"),
                     "config evaluation.split: 'test' is not one of ['train', 'val']"),
    "schema: closest alternative": (lambda c: _schedule(c, [1, -1]),
                                    "config methods.mpm.schedules.2-99[1]: -1 is less than the minimum of 0"),
    "undeclared target": (lambda c: c["benchmark"]["points"][0].update(target="jetson"),
                          "config benchmark.points[0].target: 'jetson' is not declared in"),
    "unregistered backend, evaluation": (lambda c: c["evaluation"].update(backend="xla"),
                                         "config evaluation.backend: 'xla' is not one of ['math', 'sdpa', 'fa2',"),
    "unregistered backend, benchmark point": (
        lambda c: c["benchmark"]["points"][0].update(backends=["math", "xla"]),
        "config benchmark.points[0].backends[1]: 'xla' is not one of ['math', 'sdpa', 'fa2', 'triton', 'flash-attn']"),
    "unknown model": (lambda c: c["evaluation"].update(models=["seg-x"]),
                      "config evaluation.models: unknown model 'seg-x'"),
    "zoo entry of another size": (
        lambda c: c["models"].update({"seg-b": {"dataset": "synthetic", "source": "zoo", "zoo": "seg_tiny_mask_ade20k",
                                                "size": "B"}}),
        "config models.seg-b.size: 'B', but zoo entry seg_tiny_mask_ade20k is a ViT-T (12 blocks)"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_config_names_the_key_at_start_up(case, smk, tmp_path):
    change, expected = BAD[case]
    cfg = smk.tiny_config(tmp_path)
    change(cfg)
    path = smk.write_config(tmp_path / "bad.yaml", cfg)
    done = smk.run("-n", "--configfile", str(path), timeout=300)
    assert done.returncode != 0
    assert expected in done.stderr, done.stderr[-2000:]
    assert str(path) in done.stderr  # the file is named too
    assert "Traceback" not in done.stderr and 'File "' not in done.stderr and "Exception" not in done.stderr
    assert not (tmp_path / "results").exists()  # nothing ran


def test_errors_are_listed_together(smk, tmp_path):
    cfg = smk.tiny_config(tmp_path)
    _schedule(cfg, [2, 99])
    _tome(cfg, r=-3)
    done = smk.run("-n", "--configfile", str(smk.write_config(tmp_path / "bad.yaml", cfg)), timeout=300)
    assert done.returncode != 0
    assert "config methods.mpm.schedules.2-99:" in done.stderr and "config methods.tome.args.r:" in done.stderr


@pytest.mark.parametrize("config", ["config/demo.yaml", "config/ci.yaml", "config/config.yaml"])
def test_committed_configs_pass(config, smk):
    done = smk.run("-n", "--configfile", config, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_depths_agree_with_the_model_code(smk):
    """The workflow's VIT_DEPTH (no model import at parse time) is the depth of mpm.models' presets."""
    text = (smk.repo / "workflow" / "rules" / "config.smk").read_text()
    (literal,) = re.findall(r"^VIT_DEPTH = (\{.*\})$", text, re.M)
    assert eval(literal) == {size: depth for size, (_, depth, _) in VIT_SIZES.items()}  # noqa: S307
