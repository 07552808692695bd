"""The config's names of a job (mpm.records.names) and the --names option of mpm eval / mpm bench."""

from __future__ import annotations

import pytest

from mpm.cli import main
from mpm.errors import ConfigError
from mpm.records import Names, model_name_of, parse_names, resolve_names, schedule_name


def test_schedule_name_is_derived_once():
    assert schedule_name((2, 5)) == "2-5" and schedule_name([1, 3, 5]) == "1-3-5"
    assert schedule_name(()) == "dense" and schedule_name(None) == "dense" and schedule_name("all") == "all"


def test_model_name_of_a_checkpoint():
    assert model_name_of("results/models/seg-t-demo.pth") == "seg-t-demo"
    assert model_name_of("ckpt/seg_tiny_mask/checkpoint.pth") == "seg_tiny_mask"
    assert model_name_of(None) is None


def test_parse_names_refuses_what_it_cannot_carry():
    assert parse_names("dataset=synthetic, schedule=2-5") == {"dataset": "synthetic", "schedule": "2-5"}
    for text, message in (("size=T", "unknown name 'size'"), ("schedule", "expected KEY=VALUE"),
                          ("schedule=2-5,schedule=5", "given twice"), ("schedule=2 5", "letters, digits"),
                          ("", "no names given")):
        with pytest.raises(ConfigError, match=message):
            parse_names(text)


def test_resolve_names_keeps_the_given_and_derives_the_rest():
    names = resolve_names({"schedule": "paper"}, dataset="ade20k", model=None, method="mpm", schedule=(2, 5))
    assert names == Names(dataset="ade20k", model=None, method="mpm", schedule="paper")
    assert resolve_names(None, dataset=None, model="m", method="tome", schedule="all").schedule == "all"
    with pytest.raises(ConfigError, match="unknown key"):
        resolve_names({"size": "T"}, dataset=None, model=None, method="mpm", schedule=())


@pytest.mark.parametrize("command", ["eval", "bench"])
def test_a_bad_names_option_is_one_line_before_any_work(command, tmp_path, capsys):
    args = {"eval": ["eval", "--data-root", str(tmp_path), "--dataset", "synthetic", "--checkpoint", str(tmp_path),
                     "--out", str(tmp_path / "e.json")],
            "bench": ["bench", "--images", str(tmp_path), "--out", str(tmp_path / "b.json")]}[command]
    assert main([*args, "--names", "schedule=2-5,colour=red"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--names" in err[0] and "unknown name 'colour'" in err[0]
    assert not list(tmp_path.glob("*.json"))


def test_a_benchmark_of_a_methods_default_schedule_is_named_by_its_blocks():
    """``mpm bench --method algm`` without a schedule runs ALGM's published blocks: named ``0-4``, as
    ``mpm eval`` names them, never ``dense``; ToMe's ``all`` keeps its name; given names win."""
    from mpm.benchmarking.bench import BenchSpec

    assert BenchSpec(images="x", method="algm").resolved_names((0, 4))["schedule"] == "0-4"
    assert BenchSpec(images="x", method="none").resolved_names(())["schedule"] == "dense"
    assert BenchSpec(images="x", method="tome", schedule="all").resolved_names(range(12))["schedule"] == "all"
    named = BenchSpec(images="x", method="algm", names={"schedule": "published"})
    assert named.resolved_names((0, 4))["schedule"] == "published"
