"""Reading run directories and sweep directories: what the results store, `lmx sweep table|plot` and
`lmx compare` are built from.

A run directory (lmx train's) holds config.json, summary.json (once the run ends) and metrics.jsonl; a
sweep trial's run directory `OUT/trials/<name>--<id>/` adds trial.json (the launcher's status file,
docs/sweeps.md). Everything here reads files only, tolerates a run that is still being written (a cut
last metrics.jsonl line, no summary yet) and never imports JAX.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from lmx.config import leaf_keys
from lmx.errors import ConfigError
from lmx.sweep.spec import RUN_LOCATION_KEYS  # noqa: F401  (one definition; table, plot and compare read it here)

# Config keys that only say where a run reads or writes: never part of what a run *is* (ignored when
# runs are grouped by seed, and never shown as a swept key).
SEED_KEY = "train.seed"

# summary.json entries that are not final metrics (paths, fingerprints, nested records).
_NOT_METRICS = {"run_dir", "status", "corpus_fingerprint", "tokenizer_fingerprint", "data_stats", "versions",
                "samples"}

_LEAVES = frozenset(leaf_keys())


def read_json(path: Path) -> dict | None:
    """The JSON object in `path`, or None when the file is missing or (being written) not readable."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def flatten_config(tree: dict, prefix: str = "") -> dict:
    """config.json as `{dotted.key: value}`. A key that is a config leaf keeps its value even when the
    value is a mapping (mesh.shape) or a list (data.special_tokens); such values become their canonical
    JSON text, so every value is a hashable scalar (str, int, float, bool or None)."""
    flat = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted not in _LEAVES:
            flat.update(flatten_config(value, dotted + "."))
        elif isinstance(value, (dict, list)):
            flat[dotted] = json.dumps(value, sort_keys=True)
        else:
            flat[dotted] = value
    return flat


def number(value):
    """A metric value as a float where it is one: numbers, and the strings lmx writes for non-finite
    values ("nan", "inf", "-inf"); anything else is returned unchanged."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str) and value.strip().lower() in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity"):
        return float(value)
    return value


def final_metrics(summary: dict | None) -> dict:
    """The final metrics of a summary.json: every top-level number (or null) but the bookkeeping
    entries — params, tokens_seen, train_flops, final_train_loss, val_loss, val_perplexity, ..."""
    if not summary:
        return {}
    metrics = {}
    for key, value in summary.items():
        value = number(value)
        if key in _NOT_METRICS or isinstance(value, (dict, list, str)):
            continue
        metrics[key] = value
    return metrics


def read_metrics_rows(run_dir: Path) -> list[dict]:
    """metrics.jsonl's rows; a line that does not parse (a row cut short by a kill or still being
    written) is skipped."""
    path = Path(run_dir) / "metrics.jsonl"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    return rows


def read_curves(run_dir: Path, keys=("loss", "val_loss")) -> dict[str, list[tuple[int, float]]]:
    """`{key: [(step, value), ...]}` from metrics.jsonl, sorted by step (the last row wins for a step
    logged twice, as after a resume); non-finite values are kept as nan/inf floats."""
    curves: dict[str, dict[int, float]] = {key: {} for key in keys}
    for row in read_metrics_rows(run_dir):
        for key in keys:
            value = number(row.get(key))
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                curves[key][int(row["step"])] = float(value)
    return {key: sorted(points.items()) for key, points in curves.items()}


def read_trial(run_dir: Path) -> dict | None:
    """trial.json of a sweep trial's run directory (the launcher's status file), or None."""
    return read_json(Path(run_dir) / "trial.json")


def split_trial_dir(run_dir: Path) -> tuple[str, str | None]:
    """(name, id) from a trial directory's name `<name>--<id>` (the name alone if there is no `--`)."""
    name, sep, trial_id = Path(run_dir).name.rpartition("--")
    return (name, trial_id) if sep else (Path(run_dir).name, None)


def is_run_dir(path: Path) -> bool:
    return (Path(path) / "config.json").is_file()


def is_sweep_dir(path: Path) -> bool:
    return (Path(path) / "trials").is_dir() or (Path(path) / "sweep.json").is_file()


def trial_dirs(out: Path) -> list[Path]:
    """The trial run directories of sweep directory `out` (those with a trial.json or a config.json), in
    the order of sweep.json's trial list, then by directory name."""
    out = Path(out)
    if not is_sweep_dir(out):
        what = "does not exist" if not out.exists() else "has no trials/ directory and no sweep.json"
        raise ConfigError(f"{out}: not a sweep directory ({what})")
    root = out / "trials"
    found = sorted(p for p in root.iterdir() if p.is_dir() and
                   ((p / "trial.json").is_file() or (p / "config.json").is_file())) if root.is_dir() else []
    plan = read_json(out / "sweep.json") or {}
    order = {f"{t.get('name')}--{t.get('id')}": i for i, t in enumerate(plan.get("trials") or [])
             if isinstance(t, dict)}
    return sorted(found, key=lambda p: (order.get(p.name, len(order)), p.name))


def run_status(run_dir: Path, trial: dict | None, summary: dict | None) -> str:
    """The trial's status from trial.json; for a plain run directory, `done` once summary.json says
    completed, else the summary's status, else `unknown`."""
    if trial and trial.get("status"):
        return str(trial["status"])
    if summary:
        return "done" if summary.get("status") == "completed" else str(summary.get("status") or "unknown")
    return "unknown"


def is_finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
