"""`lmx compare RUN_OR_SWEEP...`: final metrics of runs side by side, and their loss curves on one figure.

Each path is a run directory (it has config.json) or a sweep directory (it has trials/: every trial that
has a config.json is taken). Runs whose configs differ only in `train.seed` (and run-location keys) are
one group: the table shows the mean ± the standard deviation over the group (sample std, ddof=1) and
n, and the figure the mean curve with a min-max band, so a difference between settings can be told
from seed noise. The figure's numbers are written beside it as CSV.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # a Figure saves through the Agg canvas: no pyplot, no GUI backend

from lmx.errors import ConfigError
from lmx.sweep import runs, table

# (column, summary.json key, label in Markdown)
METRICS = (
    ("final_train_loss", "final_train_loss", "train loss"),
    ("val_loss", "val_loss", "valid loss"),
    ("params", "params", "params"),
    ("tokens_seen", "tokens_seen", "tokens"),
    ("wall_s", "wall_seconds", "wall s"),
)
_IGNORED = {runs.SEED_KEY, *runs.RUN_LOCATION_KEYS}


@dataclasses.dataclass
class Run:
    path: Path
    name: str
    status: str
    config: dict  # flattened, dotted keys
    metrics: dict  # the METRICS columns (None where unknown)
    curves: dict  # {"loss": [(step, value)], "val_loss": [...]}


@dataclasses.dataclass
class Group:
    label: str
    runs: list[Run]

    @property
    def config(self) -> dict:
        return self.runs[0].config


def _load_run(path: Path) -> Run:
    trial = runs.read_trial(path) or {}
    summary = runs.read_json(path / "summary.json")
    config = runs.flatten_config(runs.read_json(path / "config.json") or {})
    curves = runs.read_curves(path)
    final = runs.final_metrics(summary)
    metrics = {column: final.get(key) for column, key, _ in METRICS}
    if trial.get("wall_s") is not None:  # as the results store: the launcher's time for the trial
        metrics["wall_s"] = trial["wall_s"]
    if metrics["final_train_loss"] is None and curves["loss"]:
        metrics["final_train_loss"] = curves["loss"][-1][1]  # a run still going (or killed): its last logged loss
    if metrics["val_loss"] is None and curves["val_loss"]:
        metrics["val_loss"] = curves["val_loss"][-1][1]
    return Run(path, trial.get("name") or path.name, runs.run_status(path, trial, summary), config, metrics, curves)


def collect_runs(paths) -> list[Run]:
    """The runs of `paths` (run directories and sweep directories), each once, in the order given."""
    found: list[Path] = []
    for path in map(Path, paths):
        if runs.is_run_dir(path):
            found.append(path)
        elif (path / "trials").is_dir():
            trials = [d for d in runs.trial_dirs(path) if runs.is_run_dir(d)]
            if not trials:
                raise ConfigError(f"{path}: the sweep directory has no trial with a config.json yet")
            found += trials
        elif not path.exists():
            raise ConfigError(f"{path}: no such run or sweep directory")
        else:
            raise ConfigError(f"{path}: neither a run directory (no config.json) nor a sweep directory (no trials/)")
    unique = list(dict.fromkeys(os.path.realpath(p) for p in found))
    loaded = [_load_run(Path(p)) for p in unique]
    names = [r.name for r in loaded]
    for run in loaded:  # the same name from two places: say which
        if names.count(run.name) > 1:
            run.name = f"{run.path.parent.name}/{run.path.name}"
    return loaded


def _identity(run: Run) -> str:
    return json.dumps({k: v for k, v in run.config.items() if k not in _IGNORED}, sort_keys=True, default=str)


def _label(names: list[str]) -> str:
    """A group's name: its runs' common name without `seed-N` parts (sweep trial names), else their
    common prefix and `*` (base-s0, base-s1 -> base-s*), else the first name."""
    if len(names) == 1:
        return names[0]
    stripped = {"_".join(p for p in n.split("--")[0].split("_") if not p.startswith("seed-")) for n in names}
    if len(stripped) == 1 and next(iter(stripped)):
        return next(iter(stripped))
    prefix = os.path.commonprefix(names).rstrip("-_.=")
    return f"{prefix}*" if prefix else names[0]


def group_runs(found: list[Run]) -> list[Group]:
    """Runs grouped by their config without train.seed and run-location keys (in first-seen order)."""
    groups: dict[str, list[Run]] = {}
    for run in found:
        groups.setdefault(_identity(run), []).append(run)
    return [Group(_label([r.name for r in members]), members) for members in groups.values()]


def differing_keys(groups: list[Group]) -> list[str]:
    """Config keys (not the seed, not run-location keys) whose value differs between the groups."""
    keys = list(dict.fromkeys(k for g in groups for k in g.config))
    return [k for k in keys if k not in _IGNORED
            and len({json.dumps(g.config.get(k), default=str) for g in groups}) > 1]


def summarize(values: list) -> tuple[float | None, float | None, int]:
    """(mean, sample std (ddof=1; None for one value), count) of the finite values."""
    finite = [float(v) for v in values if runs.is_finite_number(v)]
    if not finite:
        return None, None, 0
    mean = float(np.mean(finite))
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else None
    return mean, std, len(finite)


def _cell(values: list, n: int) -> str:
    """Markdown text of a group's values: the value when all agree, else mean ± std; `(k of n)` when only
    k of the n runs have one."""
    finite = [v for v in values if runs.is_finite_number(v)]
    if not finite:
        return table.format_cell(next((v for v in values if v is not None), None))
    if len(set(finite)) == 1:
        text = table.format_cell(finite[0])
    else:
        text = plus_minus(*summarize(finite)[:2])
    return text + (f" ({len(finite)} of {n})" if len(finite) < n else "")


def plus_minus(mean: float, std: float) -> str:
    """`mean ± std` with the std to 2 significant digits and the mean to the same decimal place
    (5.4533 ± 0.0040, 71 ± 14)."""
    if not (math.isfinite(std) and std > 0):
        return f"{mean:.5g} ± {std:.2g}"
    decimals = max(0, 1 - math.floor(math.log10(std)))
    if decimals > 8:
        return f"{mean:.5g} ± {std:.2g}"
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def _value(values: list) -> tuple:
    """(value, std) of a group's values for CSV/JSON: the value itself when all agree, else the mean;
    std: sample std (0 when all agree), None for a single value."""
    finite = [v for v in values if runs.is_finite_number(v)]
    if not finite:
        return next((v for v in values if v is not None), None), None
    if len(set(finite)) == 1:
        return finite[0], (0.0 if len(finite) > 1 else None)
    mean, std, _ = summarize(finite)
    return mean, std


def comparison_table(groups: list[Group], fmt: str = "md") -> str:
    keys = differing_keys(groups)
    seeded = any(len(g.runs) > 1 for g in groups)
    status = any(r.status != "done" for g in groups for r in g.runs)
    if fmt == "md":
        headers = ["name", *(["status"] if status else []), *keys, "n", *(["seeds"] if seeded else []),
                   *(label for _, _, label in METRICS)]
        rows = []
        for g in groups:
            n = len(g.runs)
            row = [g.label, *([",".join(sorted({r.status for r in g.runs}))] if status else []),
                   *(g.config.get(k) for k in keys), n]
            if seeded:
                row.append(",".join(str(r.config.get(runs.SEED_KEY)) for r in g.runs))
            row += [_cell([r.metrics[c] for r in g.runs], n) for c, _, _ in METRICS]
            rows.append(row)
        numeric = {"n", *(label for _, _, label in METRICS),
                   *(k for k in keys if all(runs.is_finite_number(g.config.get(k)) for g in groups))}
        text = table.render(headers, rows, "md", right=[h in numeric for h in headers])
        if seeded:
            text += ("\nruns that differ only in train.seed are one row: mean ± sample std (ddof=1) over its n "
                     "runs; a difference smaller than the spread is within seed noise")
        return text
    headers = ["name", "status", *(f"config.{k}" for k in keys), "n", "seeds"]
    for column, _, _ in METRICS:
        headers += [column, f"{column}_std"]
    rows = []
    for g in groups:
        row = [g.label, ",".join(sorted({r.status for r in g.runs})), *(g.config.get(k) for k in keys),
               len(g.runs), ",".join(str(r.config.get(runs.SEED_KEY)) for r in g.runs)]
        for column, _, _ in METRICS:
            row += list(_value([r.metrics[column] for r in g.runs]))
        rows.append(row)
    return table.render(headers, rows, fmt)


def curve_stats(curves: list[list[tuple[int, float]]]) -> list[tuple[int, float, float, float, int]]:
    """(step, mean, min, max, n) at every step any curve has, over the curves that have it (finite values)."""
    by_step: dict[int, list[float]] = {}
    for curve in curves:
        for step, value in curve:
            if math.isfinite(value):
                by_step.setdefault(step, []).append(value)
    return [(s, float(np.mean(v)), float(np.min(v)), float(np.max(v)), len(v)) for s, v in sorted(by_step.items())]


def loss_figure(groups: list[Group]):
    """The figure and its data rows: per group, the train loss against step (mean line, min-max band for
    several seeds) and the valid loss points (mean, min-max error bars)."""
    fig = Figure(figsize=(8, 5), dpi=120)
    ax = fig.add_subplot()
    data = []
    for i, g in enumerate(groups):
        color = f"C{i % 10}"
        label = g.label + (f" (n={len(g.runs)})" if len(g.runs) > 1 else "")
        train = curve_stats([r.curves["loss"] for r in g.runs])
        valid = curve_stats([r.curves["val_loss"] for r in g.runs])
        if train:
            steps = [p[0] for p in train]
            ax.plot(steps, [p[1] for p in train], color=color, label=label)
            if len(g.runs) > 1:
                ax.fill_between(steps, [p[2] for p in train], [p[3] for p in train], color=color, alpha=0.2, linewidth=0)
        if valid:
            mean = np.array([p[1] for p in valid])
            err = np.array([mean - [p[2] for p in valid], [p[3] for p in valid] - mean])
            ax.errorbar([p[0] for p in valid], mean, yerr=err if len(g.runs) > 1 else None, color=color,
                        marker="s", linestyle="--", linewidth=0.8, capsize=3,
                        label=None if train else label)
        data += [(g.label, "train_loss", *p) for p in train] + [(g.label, "val_loss", *p) for p in valid]
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("train loss (lines), valid loss (squares, dashed)"
                 + ("; band and bars: min-max over seeds" if any(len(g.runs) > 1 for g in groups) else ""),
                 fontsize="small")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig, data


def compare(paths, output=None, fmt: str = "md") -> tuple[str, Path | None]:
    """(the comparison table as text, the PNG of the loss curves or None when no run logged a loss).
    The PNG goes to `output` (default compare.png in the current directory), its data to the same
    name with .csv (columns run, curve, step, mean, min, max, n)."""
    if fmt not in table.FORMATS:
        raise ConfigError(f"--format: {fmt!r} is not one of {', '.join(table.FORMATS)}")
    groups = group_runs(collect_runs(paths))
    text = comparison_table(groups, fmt)
    if not any(r.curves["loss"] or r.curves["val_loss"] for g in groups for r in g.runs):
        return text, None
    png = Path(output) if output else Path("compare.png")
    if png.suffix.lower() != ".png":
        png = png.with_name(png.name + ".png")
    png.parent.mkdir(parents=True, exist_ok=True)
    fig, data = loss_figure(groups)
    fig.savefig(png)
    with open(png.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run", "curve", "step", "mean", "min", "max", "n"])
        writer.writerows(data)
    return text, png
