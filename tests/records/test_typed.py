"""Typed records (mpm.records): tags defined once, checked on write and on read, naming file and fields."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tracking"))
from _track_results import bench_record, eval_record  # noqa: E402

from mpm.records import (  # noqa: E402
    BENCH_SCHEMA,
    EVAL_SCHEMA,
    KINDS,
    SCHEMAS,
    TRAIN_SCHEMA,
    BenchRecord,
    EvalRecord,
    RecordError,
    TrainRecord,
    record_class,
)

REPO = Path(__file__).resolve().parents[2]


def test_tags_are_defined_once_and_every_schema_file_lives_in_mpm_records():
    assert (EVAL_SCHEMA, BENCH_SCHEMA, TRAIN_SCHEMA) == ("mpm.eval/1", "mpm.bench/1", "mpm.train-demo/1")
    assert set(SCHEMAS) == set(KINDS) == {EVAL_SCHEMA, BENCH_SCHEMA, TRAIN_SCHEMA}
    for tag, path in SCHEMAS.items():
        assert path.parent == REPO / "mpm" / "records" and path.is_file()
        assert json.loads(path.read_text())["properties"]["schema"] == {"const": tag}
    assert not (REPO / "mpm" / "benchmarking" / "bench.schema.json").exists()
    # a tag is assigned in one module only (evaluate, bench, train_demo and the tables once had their own)
    for tag in (EVAL_SCHEMA, BENCH_SCHEMA, TRAIN_SCHEMA):
        where = [p.relative_to(REPO).as_posix() for p in (REPO / "mpm").rglob("*.py") if f'= "{tag}"' in p.read_text()]
        assert where == ["mpm/records/tags.py"], (tag, where)


def test_write_refuses_an_invalid_record_and_writes_nothing(tmp_path):
    rec = EvalRecord(eval_record(tmp_path))
    out = tmp_path / "out" / "e.json"
    rec.write(out)
    before = out.read_bytes()
    del rec["metrics"]
    rec["run"]["batch_size"] = 0
    with pytest.raises(RecordError) as info:
        rec.write(out)
    text = str(info.value)
    assert str(out) in text and "missing metrics" in text and "run.batch_size (0 is less than" in text
    assert out.read_bytes() == before  # the earlier file is untouched
    assert [p.name for p in out.parent.iterdir()] == ["e.json"]  # no temporary file left


def test_read_names_the_file_and_fields_and_refuses_another_kind(tmp_path):
    good = EvalRecord(eval_record(tmp_path))
    path = good.write(tmp_path / "e.json")
    assert EvalRecord.read(path) == good and isinstance(EvalRecord.read(path), EvalRecord)
    bad = copy.deepcopy(dict(good))
    bad["names"] = {"dataset": "ade20k", "model": None, "method": "mpm", "schedule": ""}
    path.write_text(json.dumps(bad))
    with pytest.raises(RecordError, match=rf"{path}: not a valid mpm.eval/1 record: invalid: names\.schedule"):
        EvalRecord.read(path)
    b = BenchRecord(bench_record()).write(tmp_path / "b.json")
    with pytest.raises(RecordError, match=rf"result {b} is a mpm.bench/1 record, expected mpm.eval/1"):
        EvalRecord.read(b)
    with pytest.raises(RecordError, match=f"cannot read result {tmp_path / 'none.json'}"):
        BenchRecord.read(tmp_path / "none.json")
    with pytest.raises(RecordError, match="unknown schema 'mpm.eval/9'"):
        record_class("mpm.eval/9")


def test_names_are_read_directly_or_derived_once_for_older_records(tmp_path):
    rec = EvalRecord(eval_record(tmp_path, schedule=(2, 5)))
    assert "names" not in rec  # a record written before names existed
    assert rec.names.to_dict() == {"dataset": "ade20k", "model": None, "method": "mpm", "schedule": "2-5"}
    rec["names"] = {"dataset": "synthetic", "model": "seg-t-demo", "method": "mpm", "schedule": "paper"}
    assert rec.validate("r").names.schedule == "paper" and rec.schedule == [2, 5]
    bench = BenchRecord(bench_record())
    bench["spec"]["schedule"] = "all"
    assert bench.names.schedule == "all" and bench.names.dataset is None


def test_the_training_record_is_checked_on_write(tmp_path):
    with pytest.raises(RecordError, match=r"missing .*checkpoint.*; invalid: steps_done"):
        TrainRecord({"schema": TRAIN_SCHEMA, "steps_done": 0}).write(tmp_path / "t.json")
    assert not (tmp_path / "t.json").exists()


def test_numbers_are_finite_and_miou_is_one(tmp_path):
    """JSON has no NaN or Infinity, but Python's json reads and writes them: the validator refuses them in any field."""
    rec = eval_record(tmp_path)
    rec["gflops"]["per_window"] = float("nan")
    with pytest.raises(RecordError, match=r"invalid: gflops\.per_window = nan is not a finite number"):
        EvalRecord(rec).write(tmp_path / "e.json")
    text = json.dumps({**eval_record(tmp_path), "wall_time_s": float("inf")})
    assert "Infinity" in text
    path = tmp_path / "inf.json"
    path.write_text(text)
    with pytest.raises(RecordError, match="wall_time_s = inf is not a finite number"):
        EvalRecord.read(path)
    rec = eval_record(tmp_path)
    rec["metrics"]["mIoU"] = None  # aAcc and mAcc may be undefined (null), mIoU may not
    rec["metrics"]["aAcc"] = None
    with pytest.raises(RecordError) as info:
        EvalRecord(rec).validate("r.json")
    assert info.value.invalid == ["metrics.mIoU = None is not a finite number"]
    assert info.value.fields == "metrics.mIoU = None is not a finite number"
    del rec["metrics"]["mIoU"]
    with pytest.raises(RecordError) as info:
        EvalRecord(rec).validate("r.json")
    assert info.value.missing == ["metrics.mIoU"] and info.value.fields == "mpm.eval/1 record has no metrics.mIoU"


def test_typed_fields_are_read_from_where_their_writer_puts_them(tmp_path):
    rec = EvalRecord(eval_record(tmp_path, schedule=(2, 5)))
    assert rec.label == "MPM(2,5)" and rec.identity.schedule == (2, 5) and rec.source is None
    assert rec.crop == tuple(rec["protocol"]["crop"]) and rec.limit == rec["limit"] and rec.partial == rec["partial"]
    bench = BenchRecord(bench_record())
    assert bench.crop == tuple(bench["image_source"]["crop"]) and bench.device_kind in ("cpu", "cuda")
    assert bench.device_name == bench["environment"]["device_name"] and bench.tokens_after == \
        [float(t) for t in bench["tokens"]["after_step_mean"]]
