"""Run record store: one JSON file per run, written atomically, loaded into a DataFrame.

A record is the contract between the trainer and the report (schema ``lai_bench.record/1``):
``run_id``, ``name``, ``grid``, ``status``, ``config`` (with ``model_opts``), ``metrics``,
``history``, ``params``, ``flops``, ``throughput``, memory, timing and environment fields.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import ID_NEUTRAL_DEFAULTS, NON_SEMANTIC, fingerprint
from ..core.files import write_text_atomic

__all__ = [
    "SCHEMA",
    "STATUSES",
    "RecordError",
    "write_record",
    "read_record",
    "load_records",
    "records_frame",
    "flatten_config",
    "config_key",
]

SCHEMA = "lai_bench.record/1"
SCHEMA_KEY = "schema"
STATUSES = ("completed", "diverged", "failed", "running")
REQUIRED_KEYS = ("run_id", "status", "config")
METRIC_KEYS = ("best_epoch",)  # every task's record has it; the rest are the task's own (Task.record_metrics)
THROUGHPUT_KEYS = ("train_samples_per_s", "infer_samples_per_s", "infer_images_per_s")
# Top-level scalar fields copied into the frame as they are.
SCALAR_KEYS = (
    "params",
    "backbone_params",
    "flops",
    "peak_memory_bytes",
    "peak_memory_kind",
    "wall_time_s",
    "diverged_epoch",
    "error",
    "code_version",
    "torch_version",
    "device",
    "started_at",
    "finished_at",
)
# Config keys that say where or how a run executes, not what it computes (the run id leaves the same ones out):
# seeds of one configuration still aggregate when these differ between machines or launches.
NON_IDENTIFYING_KEYS = frozenset({"seed", *NON_SEMANTIC})
# Files the launcher keeps beside the records: not records, and not worth a warning.
LAUNCHER_FILES = frozenset({"jobs.json"})


class RecordError(ValueError):
    """A file that is not a readable ``lai_bench`` run record."""


def _json_default(value: Any) -> Any:
    """Serialise numpy scalars/arrays and paths that a trainer may leave in a record."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _validate(record: Any, source: str) -> dict:
    """Check the schema key, the required keys and the status; return the record."""
    if not isinstance(record, dict):
        raise RecordError(f"{source}: not a run record (a JSON {type(record).__name__}, not an object)")
    if SCHEMA_KEY not in record:
        raise RecordError(f"{source}: not a run record (no {SCHEMA_KEY!r} key)")
    if record[SCHEMA_KEY] != SCHEMA:
        raise RecordError(f"{source}: unsupported schema {record[SCHEMA_KEY]!r}, expected {SCHEMA!r}")
    missing = [key for key in REQUIRED_KEYS if key not in record]
    if missing:
        raise RecordError(f"{source}: run record lacks {', '.join(missing)}")
    if record["status"] not in STATUSES:
        raise RecordError(f"{source}: status {record['status']!r} is not one of {', '.join(STATUSES)}")
    if not isinstance(record["config"], dict):
        raise RecordError(f"{source}: 'config' must be an object")
    return record


def _existing_status(path: Path) -> str | None:
    """Status of the record already at ``path``; None when absent or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def write_record(path: str | os.PathLike, record: Mapping[str, Any], overwrite: bool = True) -> Path:
    """Write ``record`` to ``path`` atomically (same-dir temp file, fsync, ``os.replace``).

    With ``overwrite=False`` an existing *completed* record is never replaced (FileExistsError).
    """
    path = Path(path)
    record = {SCHEMA_KEY: SCHEMA, **{k: v for k, v in record.items() if k != "_path"}}  # _path: added by loading
    _validate(record, str(path))
    if not overwrite and _existing_status(path) == "completed":
        raise FileExistsError(f"{path}: a completed record exists; pass overwrite=True to replace it")
    write_text_atomic(path, json.dumps(record, indent=1, default=_json_default) + "\n")
    return path


def read_record(path: str | os.PathLike) -> dict:
    """Read one record; RecordError if the file is not valid JSON or not one of our records."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise RecordError(f"{path}: not UTF-8 text ({err})") from err
    except json.JSONDecodeError as err:
        raise RecordError(f"{path}: corrupt JSON ({err})") from err
    return _validate(record, str(path))


def load_records(folder: str | os.PathLike, recursive: bool = True) -> list[dict]:
    """Load every record under ``folder``; files that are not records are skipped with a warning.

    Each returned record carries its file in the extra key ``_path``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such results folder")
    files = sorted(folder.rglob("*.json") if recursive else folder.glob("*.json"))
    records = []
    for file in files:
        if file.name in LAUNCHER_FILES:
            continue
        try:
            record = read_record(file)
        except (RecordError, OSError) as err:
            reason = str(err) if str(file) in str(err) else f"{file}: {err}"
            warnings.warn(f"skipped {reason}", stacklevel=2)
            continue
        record["_path"] = str(file)
        records.append(record)
    return records


def _plain(value: Any) -> Any:
    """A hashable, frame-friendly value: lists and dicts become compact JSON text."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def flatten_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten a config: ``model_opts`` keys become ``opt.<key>``, ``task_opts`` keys columns of their own name (a
    detection run's ``detector``), other dicts ``<key>.<sub>``."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            prefix = {"model_opts": "opt.", "task_opts": ""}.get(key, f"{key}.")
            for sub, inner in flatten_config(value).items():
                flat[f"{prefix}{sub}"] = inner
        else:
            flat[key] = _plain(value)
    return flat


def _canonical(value: Any) -> Any:
    """Make equal configurations serialise equally (NaN as null, 180.0 as 180)."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return int(value)
    return value


def config_key(config: Mapping[str, Any], ignore: Iterable[str] = NON_IDENTIFYING_KEYS) -> str:
    """A short stable hash of ``config`` without its seed (and other non-identifying keys)."""
    ignore = set(ignore)
    # Fields added later (task, detector ...) count only away from their defaults: a record written before they
    # existed and one written after, of the same run, land on the same key.
    kept = {key: value for key, value in config.items()
            if key not in ignore and not (key in ID_NEUTRAL_DEFAULTS and value == ID_NEUTRAL_DEFAULTS[key])}
    return fingerprint(_canonical(kept))


def _row(record: Mapping[str, Any]) -> dict[str, Any]:
    """One frame row: identity and status, flattened config, metrics, costs, environment."""
    row: dict[str, Any] = {key: record.get(key) for key in ("run_id", "name", "grid", "status")}
    for key, value in flatten_config(record.get("config") or {}).items():
        row[f"config.{key}" if key in row else key] = value
    metrics = dict.fromkeys(METRIC_KEYS) | dict(record.get("metrics") or {})
    throughput = dict.fromkeys(THROUGHPUT_KEYS) | dict(record.get("throughput") or {})
    row.update({key: _plain(value) for key, value in metrics.items()})
    row.update({key: _plain(value) for key, value in throughput.items()})
    row.update({key: _plain(record.get(key)) for key in SCALAR_KEYS})
    row["epochs_done"] = len(record.get("history") or [])
    row["config_key"] = config_key(record.get("config") or {})
    row["path"] = record.get("_path")
    return row


def records_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per record: flattened config (``opt.<key>`` for model options), metrics, costs, status."""
    rows = [_row(record) for record in records]
    if not rows:
        rows = [_row({"config": {}})]
        return pd.DataFrame(rows).iloc[0:0]
    return pd.DataFrame(rows)
