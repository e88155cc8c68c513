"""`lmx sweep run|status|table|plot`: run a sweep file and read its results store (lmx.sweep)."""

from __future__ import annotations

from pathlib import Path

from lmx.sweep import plot as sweep_plot
from lmx.sweep import runner, status, table

LAUNCHERS = ("local", "ray", "tpu")
FORMATS = ("md", "csv", "json")


def add_parser(verbs) -> None:
    sweep = verbs.add_parser("sweep", help="run a sweep file and read its results",
                             description="Run the trials of a sweep file (experiments/*.py) and read the "
                                         "results store of a sweep directory.")
    sub = sweep.add_subparsers(dest="sweep_verb", metavar="SUBVERB")
    sub.required = True

    run = sub.add_parser("run", help="run (or resume) every trial of a sweep file")
    run.add_argument("file", help="the sweep file (a Python file defining `sweep = Sweep(...)`)")
    run.add_argument("--out", required=True, help="the sweep directory (trials, results.parquet)")
    run.add_argument("--launcher", choices=LAUNCHERS, default="local", help="where trials run (default: local)")
    run.add_argument("--workers", type=int, default=1, help="trials run at once (local launcher; default 1)")
    run.add_argument("--dry-run", action="store_true", help="print the plan (trials, ids, overrides, state); run nothing")
    run.add_argument("--retries", type=int, default=0, help="reruns of a trial that fails in this invocation")
    run.add_argument("--retry-failed", action="store_true", help="rerun trials recorded as failed by earlier runs")
    run.set_defaults(func=_run)

    stat = sub.add_parser("status", help="pending/running/done/failed trials of a sweep directory, with progress")
    stat.add_argument("out", help="the sweep directory")
    stat.set_defaults(func=_status)

    tab = sub.add_parser("table", help="the results store as a table")
    tab.add_argument("out", help="the sweep directory")
    tab.add_argument("--cols", nargs="+", help="columns to show (default: the swept keys, status and final metrics)")
    tab.add_argument("--sort", help="column to sort by; descending with a - prefix, written --sort=-COLUMN")
    tab.add_argument("--where", action="append", default=[], help="row filter, e.g. status=done or model.n_layers>2")
    tab.add_argument("--format", choices=FORMATS, default="md", help="output format (default md)")
    tab.set_defaults(func=_table)

    plot = sub.add_parser("plot", help="a metric against a swept key (PNG, and its data as CSV)")
    plot.add_argument("out", help="the sweep directory")
    plot.add_argument("--x", required=True, help="column on the x axis (e.g. metrics.params)")
    plot.add_argument("--y", required=True, help="column on the y axis (e.g. metrics.valid_loss)")
    plot.add_argument("--hue", help="one line per value of this column")
    plot.add_argument("--logx", action="store_true", help="log-scaled x axis")
    plot.add_argument("--logy", action="store_true", help="log-scaled y axis")
    plot.add_argument("--where", action="append", default=[], help="row filter, as for `lmx sweep table`")
    plot.add_argument("--output", help="PNG path (default OUT/plot_<y>_vs_<x>.png; the CSV beside it)")
    plot.set_defaults(func=_plot)


def _run(args) -> int:
    return runner.run_sweep(Path(args.file), Path(args.out), launcher=args.launcher, workers=args.workers,
                            dry_run=args.dry_run, retries=args.retries, retry_failed=args.retry_failed)


def _status(args) -> int:
    return status.print_status(Path(args.out), print)


def _table(args) -> int:
    print(table.sweep_table(Path(args.out), cols=args.cols, sort=args.sort, where=args.where, fmt=args.format))
    return 0


def _plot(args) -> int:
    png, csv = sweep_plot.plot_sweep(Path(args.out), x=args.x, y=args.y, hue=args.hue, logx=args.logx,
                                     logy=args.logy, output=args.output, where=args.where)
    print(f"wrote {png} and {csv}")
    return 0
