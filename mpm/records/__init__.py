"""Result records: what the pipeline's jobs write and every later layer (tracking, tables) reads.

One typed record per kind (:mod:`mpm.records.typed`), one JSON schema per kind, found by the
record's ``schema`` field (the tags are defined once, in :mod:`mpm.records.tags`):

- ``mpm.eval/1``: :class:`EvalRecord`, written by :func:`mpm.evaluation.evaluate.evaluate`
  (``mpm eval``), schema ``mpm/records/eval.schema.json``;
- ``mpm.bench/1``: :class:`BenchRecord`, made by :func:`mpm.benchmarking.bench.run_point`
  (``mpm bench``), schema ``mpm/records/bench.schema.json``;
- ``mpm.train-demo/1``: :class:`TrainRecord`, written by :func:`mpm.evaluation.train_demo.train_demo`
  beside its checkpoint (``mpm train-demo``), schema ``mpm/records/train.schema.json``.

Evaluation and benchmark records carry the config's names of their job (``names``: dataset, model,
method, schedule; :mod:`mpm.records.names`) beside the resolved values.

:func:`load_record` reads a file, :func:`parse_record` bytes and :func:`validate_record` a parsed
dict; each returns the record or raises :class:`RecordError` (a :class:`~mpm.errors.ConfigError`)
with one line naming the file and every missing or invalid field, e.g.::

    results/eval/x.json: not a valid mpm.eval/1 record: missing dataset, images, metrics; invalid: limit (0 is less than the minimum of 1)

Validation needs ``jsonschema`` (a core dependency); without it the loader says so.
Importing this package imports neither torch nor jsonschema.
"""

from __future__ import annotations

from mpm.records.names import NAME_KEYS, Names, model_name_of, parse_names, resolve_names, schedule_name
from mpm.records.schema import (
    KINDS,
    SCHEMAS,
    RecordError,
    _validator,
    is_finite_number,
    load_record,
    parse_record,
    record_kind,
    validate_record,
)
from mpm.records.tags import BENCH_SCHEMA, EVAL_SCHEMA, TRAIN_SCHEMA
from mpm.records.typed import BenchRecord, EvalRecord, Record, TrainRecord, record_class

__all__ = [
    "BENCH_SCHEMA", "EVAL_SCHEMA", "KINDS", "NAME_KEYS", "SCHEMAS", "TRAIN_SCHEMA",
    "BenchRecord", "EvalRecord", "Names", "Record", "RecordError", "TrainRecord",
    "is_finite_number", "load_record", "model_name_of", "parse_names", "parse_record", "record_class", "record_kind",
    "resolve_names", "schedule_name", "validate_record",
]
