"""Result records read for the paper's tables: ``mpm.eval/1`` and ``mpm.bench/1`` files, folders and manifests.

Every record is checked against its schema and handed on as its typed record (:mod:`mpm.records`:
:class:`~mpm.records.EvalRecord`, :class:`~mpm.records.BenchRecord`); a file that cannot be read, is
not JSON or does not follow its schema raises :class:`~mpm.errors.ConfigError` naming the file and
the fields (``result file x.json: mpm.eval/1 record has no metrics.mIoU``). Each record read gets
``_file``, where it came from (its :attr:`~mpm.records.Record.source`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mpm.errors import ConfigError
from mpm.records import BENCH_SCHEMA, EVAL_SCHEMA, BenchRecord, EvalRecord, RecordError

_TYPED = {EVAL_SCHEMA: EvalRecord, BENCH_SCHEMA: BenchRecord}


@dataclass
class Results:
    """The records read from result files (each with ``_file``, its ``source``: where it came from)."""

    evals: list[EvalRecord] = field(default_factory=list)
    benches: list[BenchRecord] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    #: JSON files found in folders that hold neither schema (an explicitly named one raises)
    skipped: list[str] = field(default_factory=list)
    #: records read twice with identical content (a file named twice, an MLflow artifact copy)
    duplicates: int = 0


def read_manifest(path: str | Path) -> list[str]:
    """Result paths listed in ``path``: one per line (``#`` comments and blank lines ignored), or
    a JSON list. A relative path is taken from the working directory, else from the manifest's folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"manifest {path}: cannot read it ({getattr(err, 'strerror', None) or err})") from None
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except ValueError as err:
            raise ConfigError(f"manifest {path}: invalid JSON list ({err})") from None
        if not all(isinstance(i, str) for i in items):
            raise ConfigError(f"manifest {path}: a JSON manifest must be a list of paths")
    else:
        items = [line.strip() for line in text.splitlines()]
        items = [i for i in items if i and not i.startswith("#")]
    out = []
    for item in items:
        p = Path(item).expanduser()
        if not p.is_absolute() and not p.exists() and (path.parent / p).exists():
            p = path.parent / p
        out.append(str(p))
    return out


def expand_paths(paths: Iterable[str | Path], manifest: str | Path | None = None) -> list[tuple[Path, bool]]:
    """``(file, named explicitly)`` for files and folders (searched recursively for ``*.json``), once each."""
    items = [Path(p) for p in paths] + [Path(p) for p in (read_manifest(manifest) if manifest else [])]
    out: list[tuple[Path, bool]] = []
    seen: set[str] = set()
    for item in items:
        if item.is_dir():
            entries = [(q, False) for q in sorted(item.rglob("*.json")) if q.is_file()]
        elif item.is_file():
            entries = [(item, True)]
        else:
            raise ConfigError(f"result file {item} does not exist")
        for q, explicit in entries:
            key = str(q.resolve())
            if key not in seen:
                seen.add(key)
                out.append((q, explicit))
    return out


def load_results(paths: Iterable[str | Path], manifest: str | Path | None = None) -> Results:
    """Read every result file (a record or a list of records per file).

    Raises :class:`ConfigError` naming the file for a missing or unreadable file, invalid JSON, a
    record that does not follow its schema (and its fields), and an explicitly named file of another schema.
    """
    res = Results()
    seen: set[str] = set()
    for path, explicit in expand_paths(paths, manifest):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"result file {path}: cannot read it ({getattr(err, 'strerror', None) or err})") from None
        except ValueError as err:
            raise ConfigError(f"result file {path}: invalid JSON ({err})") from None
        records = data if isinstance(data, list) else [data]
        schemas = [r.get("schema") if isinstance(r, dict) else None for r in records]
        if not records or any(s not in (EVAL_SCHEMA, BENCH_SCHEMA) for s in schemas):
            if not explicit:
                res.skipped.append(str(path))
                continue
            bad = next((s for s in schemas if s not in (EVAL_SCHEMA, BENCH_SCHEMA)), None)
            raise ConfigError(f"result file {path}: schema {bad!r} is neither {EVAL_SCHEMA} nor {BENCH_SCHEMA}"
                              if records else f"result file {path}: an empty list holds no result")
        res.files.append(str(path))
        for i, (rec, schema) in enumerate(zip(records, schemas)):
            where = f"{path}" + (f" [record {i}]" if isinstance(data, list) else "")
            try:
                typed = _TYPED[schema].from_dict({**rec, "_file": where}, where)
            except RecordError as err:
                if not err.fields:
                    raise  # not about its fields (an incomplete record): the message names the file
                raise ConfigError(f"result file {where}: {err.fields}") from None
            digest = hashlib.sha256(json.dumps(rec, sort_keys=True, default=str).encode()).hexdigest()
            if digest in seen:
                res.duplicates += 1
                continue
            seen.add(digest)
            (res.evals if schema == EVAL_SCHEMA else res.benches).append(typed)
    return res
