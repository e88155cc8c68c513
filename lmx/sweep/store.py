"""The results store of a sweep directory: OUT/results.parquet, one row per trial.

A row joins the trial's trial.json (name, id, status, attempts, wall_s, error, ...), its config.json
flattened to `config.<dotted.key>` columns and its summary.json's final metrics as `metrics.<name>`
columns (params, tokens_seen, train_flops, final_train_loss, val_loss, val_perplexity, ...). A column
has one type across rows (a value a row lacks is null). The store is derived data: `rebuild_store`
makes it from the run directories alone, `write_store` replaces the file atomically, and `read_store`
rebuilds it whenever a trial changed after it was written.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lmx.config import leaf_keys
from lmx.errors import ConfigError
from lmx.sweep import runs

STORE_NAME = "results.parquet"

# Trial columns first, in this order, with fixed types.
TRIAL_COLUMNS = {
    "name": pa.string(),
    "id": pa.string(),
    "status": pa.string(),
    "attempts": pa.int64(),
    "wall_s": pa.float64(),
    "error": pa.string(),
    "run_dir": pa.string(),
    "launcher": pa.string(),
    "ensemble": pa.string(),
    "started": pa.string(),
    "finished": pa.string(),
    "overrides": pa.string(),  # the trial's own overrides as JSON text
}

_write_lock = threading.Lock()


def store_path(out: Path) -> Path:
    return Path(out) / STORE_NAME


def trial_row(run_dir: Path) -> dict:
    """One store row for a trial's run directory."""
    run_dir = Path(run_dir)
    trial = runs.read_trial(run_dir) or {}
    summary = runs.read_json(run_dir / "summary.json")
    config = runs.read_json(run_dir / "config.json") or {}
    dir_name, dir_id = runs.split_trial_dir(run_dir)
    wall = trial.get("wall_s")
    if wall is None and summary:
        wall = summary.get("wall_seconds")
    overrides = trial.get("overrides")
    row = {
        "name": trial.get("name") or dir_name,
        "id": trial.get("id") or dir_id,
        "status": runs.run_status(run_dir, trial, summary),
        "attempts": trial.get("attempts"),
        "wall_s": wall,
        "error": trial.get("error"),
        "run_dir": os.path.abspath(run_dir),
        "launcher": trial.get("launcher"),
        "ensemble": trial.get("ensemble"),
        "started": trial.get("started"),
        "finished": trial.get("finished"),
        "overrides": None if overrides is None else json.dumps(overrides, sort_keys=True),
    }
    if config:
        row.update({f"config.{k}": v for k, v in runs.flatten_config(config).items()})
    elif isinstance(overrides, dict):  # no config.json (a trial that failed before writing it): its overrides
        row.update({f"config.{k}": runs.flatten_config({k: v})[k] for k, v in overrides.items()})
    row.update({f"metrics.{k}": v for k, v in runs.final_metrics(summary).items()})
    return row


def _column_type(name: str, values: list) -> pa.DataType:
    """One Arrow type for a column: bool, int64, float64 (ints and floats mixed) or string."""
    if name in TRIAL_COLUMNS:
        return TRIAL_COLUMNS[name]
    present = [v for v in values if v is not None]
    if not present:
        return pa.float64() if name.startswith("metrics.") else pa.string()
    if all(isinstance(v, bool) for v in present):
        return pa.bool_()
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pa.int64()
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pa.float64()
    return pa.string()


def _cast(value, kind: pa.DataType):
    if value is None:
        return None
    if kind == pa.string():
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if kind == pa.float64():
        return float(value)
    if kind == pa.int64():
        return int(value)
    return value


def _order(names: list[str]) -> list[str]:
    """Trial columns, then config columns in the config tree's order (unknown ones sorted after), then
    metric columns in the order summary.json has them."""
    config_order = {f"config.{k}": i for i, k in enumerate(leaf_keys())}
    trial = [n for n in TRIAL_COLUMNS if n in names]
    config = sorted((n for n in names if n.startswith("config.")), key=lambda n: (config_order.get(n, 1 << 30), n))
    metrics = [n for n in names if n.startswith("metrics.")]
    other = [n for n in names if n not in TRIAL_COLUMNS and not n.startswith(("config.", "metrics."))]
    return trial + config + metrics + other


def table_from_rows(rows: list[dict]) -> pa.Table:
    """An Arrow table of `rows` with consistently typed columns (a value a row lacks is null)."""
    names: list[str] = list(TRIAL_COLUMNS)
    seen = set(names)
    for row in rows:
        for name in row:
            if name not in seen:
                seen.add(name)
                names.append(name)
    names = _order(names)
    arrays, fields = [], []
    for name in names:
        values = [row.get(name) for row in rows]
        kind = _column_type(name, values)
        arrays.append(pa.array([_cast(v, kind) for v in values], type=kind))
        fields.append(pa.field(name, kind))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def rebuild_store(out: Path) -> pa.Table:
    """The store of sweep directory `out`, built from its trials' run directories (one row per trial,
    in sweep.json's order)."""
    return table_from_rows([trial_row(run_dir) for run_dir in runs.trial_dirs(Path(out))])


def write_store(out: Path) -> Path:
    """Rebuild the store and write OUT/results.parquet atomically (a temporary file, then os.replace:
    a reader sees the old file or the new one). Safe to call from several threads or processes at once
    (each writes its own temporary file). Returns the path."""
    out = Path(out)
    table = rebuild_store(out)
    path = store_path(out)
    tmp = out / f".{STORE_NAME}.tmp.{os.getpid()}.{threading.get_ident()}"
    with _write_lock:
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path


def is_stale(out: Path) -> bool:
    """True when results.parquet is missing, or older than a trial's trial.json / summary.json /
    config.json, or lists other trial directories than there are."""
    out = Path(out)
    path = store_path(out)
    try:
        written = path.stat().st_mtime_ns
        stored = set(pq.read_table(path, columns=["run_dir"]).column("run_dir").to_pylist())
    except (FileNotFoundError, OSError, pa.ArrowException, KeyError):
        return True
    dirs = runs.trial_dirs(out)
    if {Path(p).name for p in stored} != {d.name for d in dirs}:
        return True
    for run_dir in dirs:
        for name in ("trial.json", "summary.json", "config.json"):
            try:
                if (run_dir / name).stat().st_mtime_ns >= written:
                    return True
            except FileNotFoundError:
                continue
    return False


def read_store(out: Path) -> pa.Table:
    """The store of `out`: results.parquet, rebuilt (and rewritten) first when missing or stale. A sweep
    directory that cannot be written (read-only) is still read: the rebuilt table is returned."""
    out = Path(out)
    if not runs.is_sweep_dir(out):
        runs.trial_dirs(out)  # raises the one-line error naming the directory
    if is_stale(out):
        try:
            write_store(out)
        except OSError:
            return rebuild_store(out)
    try:
        return pq.read_table(store_path(out))
    except (OSError, pa.ArrowException) as exc:
        raise ConfigError(f"{store_path(out)}: cannot read the results store: {exc}") from None
