"""One typed record per result kind: checked against its schema on write and on read.

A record *is* its JSON object (a ``dict`` subclass, so every layer that indexes it keeps working),
with the fields its readers need as typed properties. :meth:`Record.write` validates and writes
atomically (temporary file + rename); :meth:`Record.read` loads and validates, and refuses a record
of another kind; both raise :class:`~mpm.records.schema.RecordError` naming the file and the fields.

Each field is read from the one place its writer puts it (the schema says which are optional; an
optional one reads None when absent), so no reader chains fallbacks of its own.

>>> rec = EvalRecord.read("results/eval/synthetic/seg-t-demo/mpm/2-5.json")
>>> rec.names.schedule, rec.schedule, rec.label
('2-5', [2, 5], 'MPM(2,5)')
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from mpm.records.names import Names, resolve_names
from mpm.records.schema import RecordError, load_record, validate_record
from mpm.records.tags import BENCH_SCHEMA, EVAL_SCHEMA, TRAIN_SCHEMA

if TYPE_CHECKING:
    from mpm.methods import MethodIdentity

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

    @property
    def source(self) -> str | None:
        """Where a reader found the record (``x.json``, ``x.json [record 2]``): its bookkeeping key ``_file``,
        which :func:`mpm.tables.results.load_results` sets; None when no reader set it."""
        return self.get("_file")

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

    @property
    def identity(self) -> "MethodIdentity":
        """The method's identity (:class:`mpm.methods.MethodIdentity`) of the record's ``method`` entry."""
        from mpm.methods import MethodIdentity  # mpm.methods imports mpm.records (schedule names)

        return MethodIdentity.from_dict(self["method"])

    @property
    def label(self) -> str:
        """Tables, figures and legends: the method with the config's schedule name (``ToMe(r=8; all)``, ``MPM(2,5)``)."""
        return self.identity.label_for(self.names.schedule)

    @property
    def model_size(self) -> str | None:
        """The ViT size (``T``, ``S``, ``B``, ``L``); None when the model has none."""
        return self["model"]["size"]

    @property
    def model_config(self) -> dict[str, Any]:
        """The model's :class:`~mpm.models.SegmenterConfig` as a dict (``depth``, ``patch_size``, ...)."""
        return self["model"]["config"]

    @property
    def device_name(self) -> str | None:
        """The device's model name (``NVIDIA H100 80GB HBM3``, a CPU's model): ``environment.device_name``."""
        return self["environment"].get("device_name")  # an evaluation's schema leaves it optional

    @property
    def tokens_after(self) -> list[float]:
        """Mean image tokens left after each merge step (``tokens.after_step_mean``)."""
        return [float(t) for t in self["tokens"]["after_step_mean"]]


class EvalRecord(_Named):
    """``mpm.eval/1``: one evaluation (:func:`mpm.evaluation.evaluate.evaluate`)."""

    schema = EVAL_SCHEMA

    def _resolved(self) -> dict[str, Any]:
        return {"dataset": self["dataset"]["name"], "model": None, "method": self.method_name,
                "schedule": self.schedule}

    @property
    def dataset_name(self) -> str:
        return self["dataset"]["name"]

    @property
    def split(self) -> str:
        return self["dataset"]["split"]

    @property
    def synthetic(self) -> bool:
        """Whether the data are synthetic (``dataset.synthetic``; a record that does not say so is of real data)."""
        return bool(self["dataset"].get("synthetic"))

    @property
    def model_name(self) -> str:
        """The architecture (``Seg-T/16-mask``; the config's model name is :attr:`names`' ``model``)."""
        return self["model"]["name"]

    @property
    def checkpoint_path(self) -> str | None:
        """The checkpoint file evaluated; None when the model was given without one."""
        return self["checkpoint"]["path"] if self["checkpoint"] is not None else None

    @property
    def crop(self) -> tuple[int, int]:
        """The sliding window's size (``protocol.crop``)."""
        h, w = self["protocol"]["crop"]
        return int(h), int(w)

    @property
    def miou(self) -> float:
        """mIoU in percent (a finite number: the schema requires it)."""
        return float(self["metrics"]["mIoU"])

    @property
    def aacc(self) -> float | None:
        return self["metrics"]["aAcc"]

    @property
    def macc(self) -> float | None:
        return self["metrics"]["mAcc"]

    @property
    def gflops_per_image(self) -> float:
        return self["gflops"]["per_image"]

    @property
    def dense_gflops_per_image(self) -> float:
        return self["gflops"]["dense_per_image"]

    @property
    def image_tokens(self) -> float | None:
        """Mean image tokens of a window before any merge; None without a window."""
        return self["tokens"]["image_tokens"]["mean"]

    @property
    def token_steps(self) -> list[tuple[int, str, float]]:
        """``(block, site, mean tokens after the step)`` of each merge step, in the order they run.

        A step that does not say its block or site, or has no mean (no window), is left out.
        """
        return [(int(s["block"]), str(s["site"]), float(s["mean"])) for s in self["tokens"]["steps"]
                if s.get("block") is not None and s.get("site") is not None and s["mean"] is not None]

    @property
    def partial(self) -> bool:
        """Fewer than all images of the split were evaluated (an image limit)."""
        return bool(self["partial"])

    @property
    def limit(self) -> int | None:
        """The image limit asked for; None for all images."""
        return self["limit"]

    @property
    def evaluated(self) -> int:
        return self["images"]["evaluated"]

    @property
    def total(self) -> int:
        return self["images"]["total"]

    @property
    def device(self) -> str:
        """The torch device evaluated on (``cpu``, ``cuda:0``); its model is :attr:`device_name`."""
        return self["device"]

    @property
    def dtype(self) -> str:
        return self["dtype"]

    @property
    def backend(self) -> str:
        return self["backend"]


class BenchRecord(_Named):
    """``mpm.bench/1``: one benchmark point (:func:`mpm.benchmarking.bench.run_point`)."""

    schema = BENCH_SCHEMA

    def _resolved(self) -> dict[str, Any]:
        return {"dataset": None, "model": None, "method": self.method_name, "schedule": self["spec"]["schedule"] or self.schedule}

    @property
    def target_name(self) -> str | None:
        """The target the point was timed on (``target.name``, written by every runner); None in a
        record written by :func:`mpm.benchmarking.bench.run_point` alone."""
        return self["target"]["name"] if "target" in self else None

    @property
    def weights(self) -> str:
        """``checkpoint`` or ``random-init``."""
        return self["model"]["weights"]

    @property
    def checkpoint_path(self) -> str | None:
        """The checkpoint timed (written with weights ``checkpoint``); None for random weights."""
        return self["model"].get("checkpoint")

    @property
    def crop(self) -> tuple[int, int]:
        """The image size timed (``image_source.crop``: the spec's crop, else the model's image size)."""
        h, w = self["image_source"]["crop"]
        return int(h), int(w)

    @property
    def device_kind(self) -> str:
        """``cuda``, ``cpu``: the type of the torch device timed (``environment.device``)."""
        return self["environment"]["device"].split(":")[0]

    @property
    def threads(self) -> int:
        """torch's intra-op threads during the timing."""
        return self["environment"]["torch_threads"]

    @property
    def batch_size(self) -> int:
        return self["spec"]["batch_size"]

    @property
    def backend(self) -> str:
        return self["spec"]["backend"]

    @property
    def dtype(self) -> str:
        return self["spec"]["dtype"]

    @property
    def images_per_s(self) -> float:
        return float(self["timing"]["images_per_s"])

    @property
    def per_image_ms(self) -> float:
        return float(self["timing"]["per_image_ms"])

    @property
    def p10_ms(self) -> float:
        """10th percentile of the batch latency (ms)."""
        return float(self["timing"]["p10_ms"])

    @property
    def p90_ms(self) -> float:
        """90th percentile of the batch latency (ms)."""
        return float(self["timing"]["p90_ms"])

    @property
    def gflops(self) -> float | None:
        """GFLOPs per image from the tokens counted; None where the runtime cannot count them."""
        return self["gflops"]


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
