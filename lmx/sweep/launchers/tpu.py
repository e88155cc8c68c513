"""The Cloud TPU launcher: each trial is the multi-host `lmx train` that scripts/launch_tpu_vm.sh
starts on a TPU VM slice, and its run directory is copied back into the sweep's store.

Three ways to get slices (`TpuOptions.mode`):
    vm      one TPU VM per trial, named lmx-<sweep>-<trial id> (created, or reused if it exists)
    queued  one queued resource per trial (`gcloud compute tpus queued-resources create`), optionally spot
    pool    the caller's existing TPU VMs (`pool`): trial i runs on slice i mod len(pool), one trial per
            slice at a time; nothing is created or deleted
Per trial, in order: the launch script (copy the checkout, install, run `lmx train ... --run-dir
runs/sweeps/<sweep>/<trial dir>` on every worker, with --resume when the trial ran before: its
checkpoints are on the slice); copy that run directory back from worker 0 into OUT/trials/; and with
`delete`, remove the per-trial slice.

Limits: the run directory lives on the slice's local disks. On a single-host slice (v4-8, v5litepod-8
...) that is a complete run directory; on a multi-host slice each host holds its own shards of the
checkpoints, so what is copied back has the metrics, summary and config but not restorable
checkpoints, and a resume needs the same slice. Run directories on Cloud Storage (one place every
host reaches) are not supported yet.
`commands` returns these commands; the dry run prints them with the launch script's own dry-run
output in place of its call, which is exactly what would be run.
"""

from __future__ import annotations

import collections
import os
import queue
import re
import shlex
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lmx.errors import ConfigError
from lmx.sweep.launchers.base import Job
from lmx.sweep.launchers.local import log_tail

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "scripts" / "launch_tpu_vm.sh"
MODES = ("vm", "queued", "pool")
REMOTE_ROOT = "runs/sweeps"  # relative to the checkout on the TPU VM (~/lmx)


@dataclass(frozen=True)
class TpuOptions:
    zone: str
    accelerator_type: str = "v5litepod-16"
    version: str = "v2-alpha-tpuv5-lite"
    project: str | None = None
    mode: str = "vm"
    pool: tuple[str, ...] = ()
    spot: bool = False
    delete: bool = False

    def check(self) -> None:
        if not self.zone:
            raise ConfigError("--tpu-zone: the TPU launcher needs the zone of the slices (e.g. us-west4-a)")
        if self.mode not in MODES:
            raise ConfigError(f"--tpu-mode: unknown mode {self.mode!r} (choose from {', '.join(MODES)})")
        if self.mode == "pool" and not self.pool:
            raise ConfigError("--tpu-pool: --tpu-mode pool needs the names of existing TPU VMs (--tpu-pool a,b)")
        if self.mode != "pool" and self.pool:
            raise ConfigError(f"--tpu-pool: only used with --tpu-mode pool (the mode is {self.mode})")
        if self.spot and self.mode != "queued":
            raise ConfigError("--tpu-spot: spot capacity is requested through a queued resource (--tpu-mode queued)")
        if self.delete and self.mode == "pool":
            raise ConfigError("--tpu-delete: pool slices belong to the caller and are never deleted")
        for name in self.pool:
            if not _VM_NAME.fullmatch(name):
                raise ConfigError(f"--tpu-pool: {name!r} is not a TPU VM name (lowercase letters, digits, '-')")


@dataclass(frozen=True)
class TpuJob:
    """One trial: its directory name under OUT/trials, its local run directory, `lmx train` arguments
    without --run-dir, and whether it resumes."""

    sweep: str
    trial_id: str
    trial_dir: str
    local_run_dir: Path
    train_args: tuple[str, ...]
    resume: bool = False


_VM_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")


def vm_name(sweep: str, trial_id: str) -> str:
    """lmx-<sweep>-<id> in the TPU name rules: lowercase, digits and '-', starting with a letter, <= 63 chars."""
    stem = re.sub(r"[^a-z0-9]+", "-", sweep.lower()).strip("-")[: 63 - len("lmx--") - len(trial_id)]
    return re.sub(r"-+", "-", f"lmx-{stem}-{trial_id}".lower())


def slice_for(job_index: int, job: TpuJob, options: TpuOptions) -> str:
    return options.pool[job_index % len(options.pool)] if options.mode == "pool" else vm_name(job.sweep, job.trial_id)


def _common(options: TpuOptions) -> list[str]:
    return [f"--zone={options.zone}"] + ([f"--project={options.project}"] if options.project else [])


def commands(job: TpuJob, vm: str, options: TpuOptions) -> list[list[str]]:
    """The commands that run `job` on slice `vm`, in order (see the module docstring)."""
    remote_parent = f"{REMOTE_ROOT}/{vm_name(job.sweep, '').removeprefix('lmx-').strip('-')}"
    remote_run_dir = f"{remote_parent}/{job.trial_dir}"
    tpu_vm = ["gcloud", "compute", "tpus", "tpu-vm"]
    out: list[list[str]] = []
    launch = ["bash", str(SCRIPT), "--name", vm, "--zone", options.zone, "--accelerator-type",
              options.accelerator_type, "--version", options.version]
    if options.project:
        launch += ["--project", options.project]
    if options.mode == "queued":
        launch += ["--queued"] + (["--spot"] if options.spot else [])
    if options.mode == "pool":
        launch += ["--existing"]
    train_args = list(job.train_args) + ["--run-dir", remote_run_dir, "--quiet"] + (["--resume"] if job.resume else [])
    launch += ["--", *train_args]
    out.append(launch)
    out.append(tpu_vm + ["scp", "--recurse", f"{vm}:~/lmx/{remote_run_dir}", str(job.local_run_dir.parent) + "/",
                         "--worker=0", *_common(options)])
    if options.delete:
        if options.mode == "queued":
            out.append(["gcloud", "compute", "tpus", "queued-resources", "delete", vm, *_common(options),
                        "--force", "--quiet"])
        else:
            out.append(tpu_vm + ["delete", vm, *_common(options), "--quiet"])
    return out


def dry_run_lines(jobs: Sequence[TpuJob], options: TpuOptions) -> list[str]:
    """Every command the launcher would run, one per line, grouped by trial; the launch script's own
    --dry-run output stands in for its call."""
    options.check()
    lines: list[str] = []
    for i, job in enumerate(jobs):
        vm = slice_for(i, job, options)
        lines.append(f"# trial {job.trial_dir} on {vm}")
        for cmd in commands(job, vm, options):
            if cmd[:2] == ["bash", str(SCRIPT)]:
                script = subprocess.run([*cmd[:2], "--dry-run", *cmd[2:]], capture_output=True, text=True)
                if script.returncode:
                    raise ConfigError(f"--launcher tpu: {SCRIPT.name} refused trial {job.trial_dir}: "
                                      f"{script.stderr.strip()}")
                lines.extend(script.stdout.strip().splitlines())
            else:
                lines.append(shlex.join(cmd))
    return lines


def run_job(job: TpuJob, vm: str, options: TpuOptions, log_path: Path) -> int:
    """Run `job`'s commands in order, their output appended to `log_path`; returns the launch's exit
    status. A failed copy to the slice stops before the launch; the copy back is attempted even when
    the run failed (its log and checkpoints belong in the store); a failed delete is logged only."""
    cmds = commands(job, vm, options)
    launch_at = next(i for i, cmd in enumerate(cmds) if cmd[:2] == ["bash", str(SCRIPT)])
    with open(log_path, "a", encoding="utf-8") as log:
        def call(cmd: list[str]) -> int:
            log.write("$ " + shlex.join(cmd) + "\n")
            log.flush()
            return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode

        for cmd in cmds[:launch_at]:
            if code := call(cmd):
                return code
        status = call(cmds[launch_at])
        for cmd in cmds[launch_at + 1:]:
            call(cmd)
    return status


def tpu_job(job: Job, sweep: str) -> TpuJob:
    """The TPU form of a runner's trial job: its `lmx train` arguments without this machine's python,
    run directory, --quiet and --resume (the launcher sets those for the slice)."""
    if job.ensemble:
        raise ConfigError("--launcher tpu: ensemble=True sweeps run with the local or ray launcher")
    args = list(job.argv[job.argv.index("train") + 1:])
    run_dir = Path(args[args.index("--run-dir") + 1])
    del args[args.index("--run-dir"):args.index("--run-dir") + 2]
    args = [a for a in args if a not in ("--quiet", "--resume")]
    base = args[args.index("--config") + 1]
    if Path(base).suffix == ".py" or "/" in base:  # a config file: the slice has the checkout, not this path
        try:
            args[args.index("--config") + 1] = str(Path(base).resolve().relative_to(REPO))
        except ValueError:
            raise ConfigError(f"--launcher tpu: the base config {base} is outside the lmx checkout that is "
                              f"copied to the slices ({REPO}); put it in configs/") from None
    trial = job.trials[0]
    return TpuJob(sweep, trial.id, run_dir.name, run_dir, tuple(args), resume=job.resume)


class TpuLauncher:
    """`run(jobs, on_start, on_finish)` as the local launcher's, each job on a TPU slice (module docstring):
    in pool mode one thread per slice takes the next job; otherwise up to `workers` jobs at once, each on
    its own slice. Callbacks run on the calling thread."""

    name = "tpu"

    def __init__(self, workers: int = 1, print_fn: Callable[[str], None] = print, env: dict | None = None,
                 options: TpuOptions | None = None, sweep: str = "sweep"):
        if options is None:
            raise ConfigError("--tpu-zone: the TPU launcher needs the zone of the slices (e.g. us-west4-a)")
        options.check()
        self.options, self.print_fn, self.sweep = options, print_fn, sweep
        self.slots = list(options.pool) if options.mode == "pool" else [None] * workers

    def dry_run_lines(self, jobs: Sequence[Job]) -> list[str]:
        return dry_run_lines([tpu_job(job, self.sweep) for job in jobs], self.options)

    def run(self, jobs: collections.deque, on_start: Callable[[Job, int, list[int]], None],
            on_finish: Callable[[Job, int, str], None]) -> str | None:
        events: queue.Queue = queue.Queue()
        free = list(range(len(self.slots)))
        running = 0

        def work(job: Job, slot: int, vm: str) -> None:
            offset = job.log.stat().st_size if job.log.exists() else 0
            try:
                code = run_job(tpu_job(job, self.sweep), vm, self.options, job.log)
            except Exception as exc:  # gcloud missing, or similar: the trial fails, the sweep goes on
                with open(job.log, "a", encoding="utf-8") as log:
                    log.write(f"lmx sweep: {type(exc).__name__}: {exc}\n")
                code = 1
            events.put((job, slot, code, log_tail(job.log, offset)))

        started = 0
        while jobs or running:
            while jobs and free:
                job, slot = jobs.popleft(), free.pop(0)
                tj = tpu_job(job, self.sweep)
                vm = self.slots[slot] or vm_name(self.sweep, tj.trial_id)
                job.log.parent.mkdir(parents=True, exist_ok=True)
                threading.Thread(target=work, args=(job, slot, vm), daemon=True).start()
                running += 1
                started += 1
                on_start(job, os.getpid(), [])
            job, slot, code, tail = events.get()
            running -= 1
            free.append(slot)
            on_finish(job, code, tail)
        return None
