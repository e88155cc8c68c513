"""`lmx sweep run|status|table|plot`: run a sweep file and read its results store (lmx.sweep)."""

from __future__ import annotations

from pathlib import Path

from lmx.sweep import plot as sweep_plot
from lmx.sweep import runner, status, table
from lmx.sweep.launchers import RayOptions, TpuOptions

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
    ray = run.add_argument_group("ray launcher")
    ray.add_argument("--ray-address", help="the Ray cluster (default: $RAY_ADDRESS, else auto)")
    ray.add_argument("--ray-cpus", type=float, default=1.0, help="CPUs each trial takes on the cluster (default 1)")
    ray.add_argument("--ray-gpus", type=float, default=0.0, help="GPUs each trial takes on the cluster (default 0)")
    tpu = run.add_argument_group("tpu launcher (scripts/launch_tpu_vm.sh on Cloud TPU slices)")
    tpu.add_argument("--tpu-zone", help="zone of the slices, e.g. us-west4-a")
    tpu.add_argument("--tpu-type", default="v5litepod-16", help="accelerator type (default v5litepod-16)")
    tpu.add_argument("--tpu-version", default="v2-alpha-tpuv5-lite", help="TPU software version")
    tpu.add_argument("--tpu-project", help="Google Cloud project (default: gcloud's)")
    tpu.add_argument("--tpu-mode", default="vm", help="vm: a TPU VM per trial; queued: a queued resource per "
                     "trial; pool: the existing VMs of --tpu-pool (default vm)")
    tpu.add_argument("--tpu-pool", default="", help="comma-separated names of existing TPU VMs (--tpu-mode pool)")
    tpu.add_argument("--tpu-spot", action="store_true", help="spot capacity (--tpu-mode queued)")
    tpu.add_argument("--tpu-delete", action="store_true", help="delete each trial's slice after it (vm, queued)")
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


def _launcher_options(args):
    if args.launcher == "ray":
        return RayOptions(address=args.ray_address, cpus=args.ray_cpus, gpus=args.ray_gpus)
    if args.launcher == "tpu":
        return TpuOptions(zone=args.tpu_zone or "", accelerator_type=args.tpu_type, version=args.tpu_version,
                          project=args.tpu_project, mode=args.tpu_mode,
                          pool=tuple(name for name in args.tpu_pool.split(",") if name), spot=args.tpu_spot,
                          delete=args.tpu_delete)
    return None


def _run(args) -> int:
    return runner.run_sweep(Path(args.file), Path(args.out), launcher=args.launcher, workers=args.workers,
                            dry_run=args.dry_run, retries=args.retries, retry_failed=args.retry_failed,
                            options=_launcher_options(args))


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
