"""One typed record per result kind: checked against its schema on write and on read.

A record *is* its JSON object (a ``dict`` subclass, so every layer that indexes it keeps working),
with the fields its readers need as typed properties. :meth:`Record.write` validates and writes
atomically (temporary file + rename); :meth:`Record.read` loads and validates, and refuses a record
of another kind; both raise :class:`~mpm.records.schema.RecordError` naming the file and the fields.

>>> rec = EvalRecord.read("results/eval/synthetic/seg-t-demo/mpm/2-5.json")
>>> rec.names.schedule, rec.schedule
('2-5', [2, 5])
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from mpm.records.names import Names, resolve_names
from mpm.records.schema import RecordError, load_record, validate_record
from mpm.records.tags import BENCH_SCHEMA, EVAL_SCHEMA, TRAIN_SCHEMA

__all__ = ["BenchRecord", "EvalRecord", "Record", "TrainRecord", "record_class"]

R = TypeVar("R", bound="Record")


class Record(dict):
    """A result record of one kind (:attr:`schema`); see the module docstring."""

    #: the schema tag of this kind (:mod:`mpm.records.tags`)
    schema: ClassVar[str]

    @classmethod
    def from_dict(cls: type[R], data: Any, where: str | os.PathLike = "record") -> R:
        """``data`` as this kind's record, validated (:class:`RecordError` naming ``where`` otherwise)."""
        record = validate_record(data, where)
        if record["schema"] != cls.schema:
            raise RecordError(f"result {where} is a {record['schema']} record, expected {cls.schema}")
        return cls(record)

    @classmethod
    def read(cls: type[R], path: str | os.PathLike) -> R:
        """The record in the JSON file ``path``, checked against its schema."""
        return cls.from_dict(load_record(path), path)

    def validate(self: R, where: str | os.PathLike = "record") -> R:
        """``self`` when its JSON follows its schema; else :class:`RecordError` naming ``where`` and the fields."""
        self._checked_json(where)
        return self

    def write(self, path: str | os.PathLike) -> Path:
        """Validate, then write the JSON atomically; an invalid record writes nothing."""
        from mpm.io import write_text_atomic

        return write_text_atomic(path, self._checked_json(path))

    def _checked_json(self, where: str | os.PathLike) -> str:
        """The JSON text of the record (as :func:`mpm.io.write_json_atomic` writes it), validated as read back."""
        try:
            text = json.dumps(dict(self), indent=1, sort_keys=True, ensure_ascii=False) + "\n"
        except (TypeError, ValueError) as err:
            raise RecordError(f"result {where}: the record is not JSON: {err}") from None
        type(self).from_dict(json.loads(text), where)
        return text


class _Named(Record):
    """A record of one job of the pipeline: it carries the config's names and a method."""

    schema: ClassVar[str]

    @property
    def names(self) -> Names:
        """The config's names (dataset, model, method, schedule) the record was written with.

        A record written before records carried names gets them derived from its resolved values
        (:func:`~mpm.records.names.resolve_names`; its model's config name is then unknown: None),
        here and nowhere else.
        """
        if "names" in self:
            return Names.from_dict(self["names"])
        return resolve_names(None, **self._resolved())

    def _resolved(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def method_name(self) -> str:
        return self["method"]["method"]

    @property
    def schedule(self) -> list[int]:
        """The resolved blocks with a merge site (a benchmark's ``spec.schedule`` may say ``all``)."""
        return list(self["method"]["schedule"])


class EvalRecord(_Named):
    """``mpm.eval/1``: one evaluation (:func:`mpm.evaluation.evaluate.evaluate`)."""

    schema = EVAL_SCHEMA

    def _resolved(self) -> dict[str, Any]:
        return {"dataset": self["dataset"]["name"], "model": None, "method": self.method_name,
                "schedule": self.schedule}

    @property
    def miou(self) -> float | None:
        return self["metrics"]["mIoU"]

    @property
    def partial(self) -> bool:
        return bool(self["partial"])


class BenchRecord(_Named):
    """``mpm.bench/1``: one benchmark point (:func:`mpm.benchmarking.bench.run_point`)."""

    schema = BENCH_SCHEMA

    def _resolved(self) -> dict[str, Any]:
        return {"dataset": None, "model": None, "method": self.method_name, "schedule": self["spec"]["schedule"]}

    @property
    def per_image_ms(self) -> float:
        return self["timing"]["per_image_ms"]


class TrainRecord(Record):
    """``mpm.train-demo/1``: the training record beside a demo checkpoint (:func:`mpm.evaluation.train_demo.train_demo`)."""

    schema = TRAIN_SCHEMA

    @property
    def checkpoint_sha256(self) -> str:
        return self["checkpoint"]["sha256"]

    @property
    def steps_done(self) -> int:
        return int(self["steps_done"])


_CLASSES: dict[str, type[Record]] = {cls.schema: cls for cls in (EvalRecord, BenchRecord, TrainRecord)}


def record_class(tag: str) -> type[Record]:
    """The typed record class of a schema tag."""
    try:
        return _CLASSES[tag]
    except KeyError:
        raise RecordError(f"unknown schema {tag!r} (expected one of {', '.join(_CLASSES)})") from None
