"""`lmx sweep plot`: one column of the results store against another, one line per value of a third
(`--hue`), saved as a PNG with the plotted numbers beside it as CSV.

Only finished trials (status `done`) with both values are plotted. Trials whose configs differ only in
`train.seed` (and run-location keys) are one point: the mean, with a band from the minimum to the
maximum over the seeds; the CSV has the mean, min, max, standard deviation (ddof=1) and n of every
point, in the order the lines are drawn.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # a Figure saves through the Agg canvas: no pyplot, no GUI backend

from lmx.errors import ConfigError
from lmx.sweep import runs, store, table


@dataclasses.dataclass
class Point:
    x: object
    y: float
    y_min: float
    y_max: float
    y_std: float
    n: int
    trials: list[str]


@dataclasses.dataclass
class Series:
    hue: object  # the hue column's value (None without --hue)
    points: list[Point]


def seed_group_key(row: dict, ignore=()) -> str:
    """What a trial is apart from its seed: its config columns without train.seed, run-location keys
    and `ignore`, as canonical JSON."""
    skip = {f"config.{k}" for k in (runs.SEED_KEY, *runs.RUN_LOCATION_KEYS)} | set(ignore)
    return json.dumps({k: v for k, v in row.items() if k.startswith("config.") and k not in skip},
                      sort_keys=True, default=str)


def _sort_key(value):
    return (0, value, "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0, str(value))


def plot_data(out: Path, x: str, y: str, hue: str | None = None, where=()) -> tuple[str, str, str | None, list[Series]]:
    """(x column, y column, hue column, series): what plot_sweep draws. One series per hue value
    (sorted); in each, one point per seed group, sorted by x."""
    tab = store.read_store(Path(out))
    columns = tab.schema.names
    x_col = table.resolve_column(x, columns, "--x")
    y_col = table.resolve_column(y, columns, "--y")
    hue_col = table.resolve_column(hue, columns, "--hue") if hue else None
    rows = [r for r in table.filter_rows(tab, where) if r.get("status") == "done"
            and r.get(x_col) is not None and runs.is_finite_number(r.get(y_col))]
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = (table._key(row.get(hue_col)) if hue_col else None, seed_group_key(row))
        groups.setdefault(key, []).append(row)
    by_hue: dict[str, Series] = {}
    for (hue_key, _), members in groups.items():
        ys = np.array([float(r[y_col]) for r in members])
        xs = [r[x_col] for r in members]
        numeric = all(runs.is_finite_number(v) for v in xs)
        px = float(np.mean(xs)) if numeric and len(set(xs)) > 1 else xs[0]
        point = Point(px, float(ys.mean()), float(ys.min()), float(ys.max()),
                      float(ys.std(ddof=1)) if len(ys) > 1 else 0.0, len(ys), sorted(r["name"] for r in members))
        series = by_hue.setdefault(hue_key, Series(members[0].get(hue_col) if hue_col else None, []))
        series.points.append(point)
    ordered = sorted(by_hue.values(), key=lambda s: _sort_key(s.hue))
    for series in ordered:
        series.points.sort(key=lambda p: _sort_key(p.x))
    return x_col, y_col, hue_col, ordered


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", name.strip())


def figure(x_col: str, y_col: str, hue_col: str | None, series: list[Series], logx=False, logy=False):
    """The matplotlib figure of `series`: a line (with markers) per series through the mean points, and
    a min-max band where a point has several seeds."""
    fig = Figure(figsize=(7, 4.5), dpi=120)
    ax = fig.add_subplot()
    for s in series:
        xs = [p.x for p in s.points]
        label = f"{table.short_name(hue_col)}={table.format_cell(s.hue)}" if hue_col else None
        (line,) = ax.plot(xs, [p.y for p in s.points], marker="o", label=label)
        if any(p.n > 1 for p in s.points):
            ax.fill_between(xs, [p.y_min for p in s.points], [p.y_max for p in s.points],
                            color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel(table.short_name(x_col))
    ax.set_ylabel(table.short_name(y_col))
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    if hue_col:
        ax.legend(title=None, fontsize="small")
    if any(p.n > 1 for s in series for p in s.points):
        ax.set_title("mean over seeds; band: min-max", fontsize="small")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig


def write_csv(path: Path, x_col: str, y_col: str, hue_col: str | None, series: list[Series]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*([hue_col] if hue_col else []), x_col, y_col, f"{y_col}_min", f"{y_col}_max",
                         f"{y_col}_std", "n", "trials"])
        for s in series:
            for p in s.points:
                writer.writerow([*([s.hue] if hue_col else []), p.x, repr(p.y), repr(p.y_min), repr(p.y_max),
                                 repr(p.y_std), p.n, ";".join(p.trials)])


def plot_sweep(out: Path, x: str, y: str, hue: str | None = None, logx: bool = False, logy: bool = False,
               output=None, where=()) -> tuple[Path, Path]:
    """Plot column `y` against `x` of sweep directory `out`'s store; returns (png, csv) paths. Default
    output: OUT/plot_<y>_vs_<x>.png, with `x` and `y` as given (`.` and other characters outside
    [A-Za-z0-9_-] as `-`); the CSV has the same name with .csv."""
    out = Path(out)
    x_col, y_col, hue_col, series = plot_data(out, x, y, hue, where)
    if not series:
        raise ConfigError(f"{out}: no finished trial has both {x_col} and {y_col} to plot")
    png = Path(output) if output else out / f"plot_{_slug(y)}_vs_{_slug(x)}.png"
    if png.suffix.lower() != ".png":
        png = png.with_name(png.name + ".png")
    png.parent.mkdir(parents=True, exist_ok=True)
    figure(x_col, y_col, hue_col, series, logx, logy).savefig(png)
    csv_path = png.with_suffix(".csv")
    write_csv(csv_path, x_col, y_col, hue_col, series)
    return png, csv_path
