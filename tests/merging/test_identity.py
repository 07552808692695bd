"""Method identity: one torch-free spec per method (mpm.methods), one identity per configuration, every label
and path one of its properties; the torch classes bind to the specs; no module special-cases a method by name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mpm.errors import ConfigError
from mpm.merging import available_methods as implemented
from mpm.merging import build_method
from mpm.methods import MethodIdentity, available_methods, get_spec, identify, is_dense, method_order
from mpm.records.names import schedule_name

REPO = Path(__file__).resolve().parents[2]

CASES = [  # (name, schedule, params, (label, display, label with the schedule's default name, slug))
    ("none", (), {}, ("none", "none", "none", "none")),
    ("mpm", (2, 5), {}, ("MPM(2,5)", "MPM", "MPM(2,5)", "mpm-2_5")),
    ("tome", "all", {"r": 8}, ("ToMe(r=8; 0-11)", "ToMe (r=8)", "ToMe(r=8; all)",
                               "tome-" + "_".join(map(str, range(12))) + "-r8")),
    ("tome", (0, 1), {"r": [3, 4]}, ("ToMe(r=[3,4]; 0,1)", "ToMe (r=[3,4])", "ToMe(r=[3,4]; 0,1)", "tome-0_1-r3_4")),
    ("algm", (), {}, ("ALGM(0,4)", "ALGM", "ALGM(0,4)", "algm-0_4")),
]


@pytest.mark.parametrize("name, schedule, params, forms", CASES)
def test_every_form_of_a_label_is_one_property(name, schedule, params, forms):
    ident = identify(name, schedule, depth=12, **params)
    named = ident.label_for(schedule_name(schedule or ident.schedule))  # as a job run by hand names it
    assert (ident.label, ident.display, named, ident.slug) == forms
    # the torch class says the same, and its record reads back to the same identity
    method = build_method(name, schedule, depth=12, **params)
    assert method.identity == ident and method.describe() == ident.to_dict()
    assert MethodIdentity.from_dict(method.describe()) == ident


def test_batch_policy_in_labels_and_paths():
    ident = identify("mpm", (5, 2), batch_policy="batch-min")
    assert ident.schedule == (2, 5)
    assert (ident.label, ident.display, ident.slug) == ("MPM(2,5) batch-min", "MPM [batch-min]", "mpm-2_5-batch-min")


def test_identity_keys_equal_configurations():
    a = MethodIdentity.from_dict({"method": "tome", "schedule": [0, 1], "r": 8, "_file": "x.json"})
    b = identify("tome", (1, 0), r=8)
    assert a.params == {"r": 8} and b.params == {"r": 8, "prop_attn": False}
    assert a != b and identify("tome", (0, 1), r=8) == b and len({b, identify("tome", (0, 1), r=8)}) == 1


def test_an_unregistered_name_still_gets_labels():
    ident = MethodIdentity.from_dict({"method": "future", "schedule": [3]})
    assert ident.spec is None and ident.label == "future(3)" and ident.order == len(available_methods())


def test_every_implementation_binds_to_its_spec():
    assert implemented() == available_methods() == ["none", "mpm", "tome", "algm"]
    for name in available_methods():
        method = build_method(name, (0, 4), depth=12)
        assert method.spec is get_spec(name) and method.site == get_spec(name).site
        assert set(method.params()) == set(get_spec(name).defaults)
    assert is_dense("none") and not is_dense("mpm") and method_order("tome") == 2


@pytest.mark.parametrize("name, schedule, params, message", [
    ("tome", "all", {"r": -3}, "tome: r must be >= 0, got -3"),
    ("tome", "all", {"r": [1, 2, 3]}, "tome: r has 3 entries but the schedule has 12"),
    ("tome", "all", {"q": 1}, "bad parameters for merge method 'tome': unexpected parameter 'q'"),
    ("algm", (0, 4), {"local_threshold": "high"}, "algm: could not convert local_threshold 'high'"),
    ("algm", (0, 4), {"window": [1, 1]}, "algm: window must be two sizes"),
    ("mpm", (2, 99), {}, "mpm: schedule blocks [99] out of range for an encoder of 12 blocks"),
    ("mpm", (2, 2), {}, "must list distinct block indices"),
    ("nope", (1,), {}, "unknown merge method 'nope'"),
])
def test_the_spec_and_the_class_refuse_alike(name, schedule, params, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        identify(name, schedule, depth=12, **params)
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_method(name, schedule, depth=12, **params).validate(12)


#: a comparison of a method's name with a literal (``method.name == "tome"``, ``m["method"] == "mpm"``)
_NAME_CHECK = re.compile(r"""(name|method|method_name|\[["']method(_name)?["']\])\s*[!=]=\s*["'](none|mpm|tome|algm)["']"""
                         r"""|(method|method_name)[^\n]{0,30}\bin\s*[(\[{]\s*["'](none|mpm|tome|algm)["']""")


def test_no_module_special_cases_a_method_by_name():
    found = []
    for path in sorted((REPO / "mpm").rglob("*.py")):
        if path.name == "methods.py" and path.parent.name == "mpm":
            continue  # the registry itself
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if _NAME_CHECK.search(line):
                found.append(f"{path.relative_to(REPO)}:{i}: {line.strip()}")
    assert not found, "\n".join(found)


@pytest.mark.parametrize("name, schedule, params, schedule_name, label, run_text", [
    ("mpm", (2, 5), {}, "2-5", "MPM(2,5)", "mpm/2-5"),  # the blocks' default name: the paper's form
    ("mpm", (2, 5), {}, "paper", "MPM(paper)", "mpm/paper"),
    ("tome", "all", {"r": 8}, "all", "ToMe(r=8; all)", "tome/all"),
    ("algm", (), {}, "published", "ALGM(published)", "algm/published"),
    ("none", (), {}, "dense", "none", "none/dense"),
])
def test_labels_and_run_texts_carry_the_configs_schedule_name(name, schedule, params, schedule_name, label, run_text):
    from mpm.records import Names

    ident = identify(name, schedule, depth=12, **params)
    assert ident.label_for(schedule_name) == label
    assert identify(name, schedule, depth=12, batch_policy="batch-min", **params).label_for(schedule_name) == \
        label + " batch-min"
    assert Names(dataset=None, model=None, method=name, schedule=schedule_name).method_schedule == run_text
