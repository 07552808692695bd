"""Issue 11: adding a merge method is one file plus its registration.

A throw-away method, defined and registered here only (a :class:`~mpm.methods.MethodSpec` and a tiny
torch :class:`~mpm.merging.base.MergeMethod`), runs through ``evaluate()`` on a synthetic set, the
tracking (a temporary SQLite store) and the tables builder, with no edit to tables, tracking, workflow
or schema code: its name, label and schedule name appear in the eval record, the MLflow run and the
table row. The registries are module-level dicts: the fixture restores them.
"""

from __future__ import annotations

import csv
from typing import Any, ClassVar

import pytest
import torch
from mpm_testing import synthetic_set
from torch import Tensor

from mpm import methods as method_specs
from mpm.data.classes import SYNTHETIC_CLASSES
from mpm.data.datasets import load_split
from mpm.errors import ConfigError
from mpm.merging import base as merging_base
from mpm.merging.base import MergeContext, MergeMethod, build_method, register
from mpm.merging.maps import TokenMerge, valid_mask
from mpm.methods import MethodSpec, identify, register_spec
from mpm.models import SegmenterConfig, build_segmenter, save_segmenter
from mpm.models import flops as flop_counts
from mpm.models.flops import MergeCost, MergeStep


# --------------------------------------------------------------------------- the throw-away method


class PairUpSpec(MethodSpec):
    """``pairup``: average raster neighbours (2k, 2k + 1) before each scheduled block."""

    name = "pairup"
    title = "PairUp"
    site = "before_block"
    label_params = ("k",)
    defaults = {"k": 2}

    def check_params(self, schedule: tuple[int, ...], params: dict[str, Any]) -> dict[str, Any]:
        if params["k"] != 2:
            raise ConfigError(f"pairup: only k=2 (pairs) is implemented, got {params['k']!r}")
        return {"k": 2}


class PairUp(MergeMethod):
    """Token 2k and 2k + 1 (raster order) become their mean; an odd last token stays alone."""

    name: ClassVar[str] = "pairup"
    site = "before_block"
    uses_size = False

    def __init__(self, schedule=(), batch_policy: str = "exact", k: int = 2) -> None:
        super().__init__(schedule, batch_policy)
        self.k = self._checked(schedule, k=k)["k"]

    def params(self) -> dict[str, Any]:
        return {"k": self.k}

    def merge(self, x: Tensor, ctx: MergeContext) -> TokenMerge:
        """x (B, M, C) -> (B, ceil(M / 2), C); padded slots (``ctx.lengths``) add nothing."""
        b, m, c = x.shape
        index = (torch.arange(m, device=x.device) // 2).expand(b, m).contiguous()
        keep = valid_mask(ctx.lengths, m, b, x.device).to(x.dtype).unsqueeze(-1)
        out = torch.zeros(b, (m + 1) // 2, c, dtype=x.dtype, device=x.device)
        out.scatter_add_(1, index.unsqueeze(-1).expand(-1, -1, c), x * keep)
        count = torch.zeros(b, (m + 1) // 2, 1, dtype=x.dtype, device=x.device)
        count.scatter_add_(1, index.unsqueeze(-1), keep)
        lengths = None if ctx.lengths is None else (ctx.lengths + 1) // 2
        return TokenMerge(out / count.clamp(min=1), index, lengths)


def pairup_cost(method: MergeMethod, step: MergeStep) -> MergeCost:
    """No similarity (no matmul); the pair means: one add and one scale per output element."""
    return MergeCost(0.0, 2.0 * step.n_out * step.dim)


@pytest.fixture()
def pairup():
    """Register ``pairup`` (spec, method, FLOP formula) for one test; the three registries are restored after."""
    specs, impls, costs = dict(method_specs._SPECS), dict(merging_base._REGISTRY), dict(flop_counts.MERGE_COSTS)
    try:
        register_spec(PairUpSpec)
        register(PairUp)
        flop_counts.register_merge_cost("pairup")(pairup_cost)
        yield
    finally:
        flop_counts.MERGE_COSTS.clear()
        flop_counts.MERGE_COSTS.update(costs)
        method_specs._SPECS.clear()
        method_specs._SPECS.update(specs)
        merging_base._REGISTRY.clear()
        merging_base._REGISTRY.update(impls)


def test_registration_is_undone_by_the_fixture(pairup):
    assert "pairup" in method_specs.available_methods() and isinstance(build_method("pairup", [1]), PairUp)


def test_fixture_left_no_registration_behind():
    assert "pairup" not in method_specs.available_methods() and "pairup" not in merging_base._REGISTRY
    assert "pairup" not in flop_counts.MERGE_COSTS
    with pytest.raises(ConfigError, match="unknown merge method 'pairup'"):
        identify("pairup", [1])


# --------------------------------------------------------------------------- end to end


def test_a_new_method_runs_through_evaluation_tracking_and_tables(pairup, tmp_path):
    from mpm.evaluation import evaluate
    from mpm.models import load_segmenter
    from mpm.records import EvalRecord
    from mpm.tables.paper import build_paper
    from mpm.tracking import init_store, resolve_store, track_result

    root = synthetic_set(tmp_path / "data", n_train=2, n_val=2, size=64, seed=5)
    split = load_split(root, "synthetic", "val")
    torch.manual_seed(0)
    config = SegmenterConfig(num_classes=len(SYNTHETIC_CLASSES), embed_dim=32, depth=4, num_heads=2,
                             image_size=(64, 64), decoder_depth=1)
    ckpt = save_segmenter(build_segmenter(config), tmp_path / "toy-pairup.pth") or tmp_path / "toy-pairup.pth"

    # evaluation: the dense baseline and the new method, with the config's names as the workflow passes them
    files = {}
    for method, schedule, sched_name in (("none", (), "dense"), ("pairup", (1, 2), "early")):
        res = evaluate(load_segmenter(ckpt), split, checkpoint=ckpt, method=method, schedule=schedule,
                       progress=False, workers=0,
                       names={"model": "toy", "method": method, "schedule": sched_name})
        files[method] = res.save(tmp_path / "eval" / f"{method}.json", per_class_csv=tmp_path / "eval" / f"{method}.csv")
    record = EvalRecord.read(files["pairup"])
    assert record["method"] == {"method": "pairup", "schedule": [1, 2], "batch_policy": "exact", "k": 2}
    assert record.names.method == "pairup" and record.names.schedule == "early" and record.names.model == "toy"
    image_tokens = record["tokens"]["image_tokens"]["mean"]  # 16 with a 64 px crop and 16 px patches
    assert record["tokens"]["after_step_mean"] == pytest.approx([image_tokens / 2, image_tokens / 4])
    assert record["gflops"]["per_window"] < EvalRecord.read(files["none"])["gflops"]["per_window"]

    # tracking: a temporary SQLite store
    store = tmp_path / "mlruns"
    init_store(f"sqlite:///{store}/mlflow.db", ("eval",))
    out = track_result(files["pairup"], tracking_uri=str(store), experiment="eval")
    run = resolve_store(store).client().get_run(out.run_id)
    assert run.info.run_name == "eval synthetic/val toy pairup/early bs1 math float32 cpu"
    assert run.data.params["method"] == "pairup" and run.data.params["method.k"] == "2"
    assert run.data.params["names.schedule"] == "early" and run.data.tags["mpm.schedule_name"] == "early"
    assert run.data.metrics["tokens_full"] == image_tokens

    # tables: the row of the new method, after the dense one, named by its spec's title and parameters
    written = build_paper(list(files.values()), tmp_path / "tables", tmp_path / "figures")
    [main] = [t["name"] for t in written["tables"] if t["name"].startswith("main_")]
    with open(tmp_path / "tables" / f"{main}.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["schedule"], r["blocks"]) for r in rows] == [("none", "dense", ""),
                                                                         ("PairUp (k=2)", "early", "1,2")]
    assert "| PairUp (k=2) | early | 1,2 | full |" in (tmp_path / "tables" / f"{main}.md").read_text()
    assert any(f["name"] == f"tokens_{main.removeprefix('main_')}" for f in written["figures"])
