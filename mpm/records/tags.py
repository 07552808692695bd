"""The schema tags of the result records, defined here once (``<kind>/<version>``).

A tag names a record's JSON schema (``mpm/records/<kind>.schema.json``) and its version: a change
that a reader of the old version would misread gets a new version and a new schema file.
Importing this module imports nothing else.
"""

from __future__ import annotations

__all__ = ["BENCH_SCHEMA", "EVAL_SCHEMA", "TRAIN_SCHEMA"]

#: one evaluation of a model, method and schedule on a split (``mpm eval``)
EVAL_SCHEMA = "mpm.eval/1"
#: one benchmark point (``mpm bench``)
BENCH_SCHEMA = "mpm.bench/1"
#: the training record beside a demo checkpoint (``mpm train-demo``: ``<checkpoint>.json``)
TRAIN_SCHEMA = "mpm.train-demo/1"
