"""`lmx compare RUN_OR_SWEEP...`: final metrics side by side and loss curves on one figure (lmx.sweep.compare)."""

from __future__ import annotations

from pathlib import Path

from lmx.sweep import compare as compare_runs


def add_parser(verbs) -> None:
    cmp = verbs.add_parser("compare", help="compare runs and sweeps: final metrics and loss curves",
                           description="Final metrics side by side and loss curves on one figure; runs that "
                                       "differ only in seed are grouped (mean and spread, a band on the figure).")
    cmp.add_argument("paths", nargs="+", help="run directories and/or sweep directories")
    cmp.add_argument("--output", help="PNG of the loss curves (default: compare.png in the current directory)")
    cmp.add_argument("--format", choices=("md", "csv", "json"), default="md", help="table format (default md)")
    cmp.set_defaults(func=run)


def run(args) -> int:
    text, png = compare_runs.compare([Path(p) for p in args.paths], output=args.output, fmt=args.format)
    print(text)
    if png:
        print(f"loss curves: {png}")
    return 0
