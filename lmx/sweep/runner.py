"""`lmx sweep run`: run (or resume) every trial of a sweep file.

Each trial is `python -m lmx.cli train --config BASE --set KEY=VALUE ... --run-dir OUT/trials/NAME--ID
--quiet` (plus `--resume` once the run directory holds a run), started by a launcher. On a rerun a done
trial is skipped, an interrupted (its process gone) or preempted one resumes from its last checkpoint,
and a failed one is rerun only with `retry_failed` (`--retry-failed`); `retries` reruns a trial that
fails during this invocation. With `Sweep(ensemble=True)` the trials whose configs differ only in
ENSEMBLE_KEYS train as one `python -m lmx.train.ensemble SPEC.json` job.

The exit code is 0 when every trial is done, 1 when any is not (failed, preempted, or left running
elsewhere). Only one `lmx sweep run` works in a sweep directory at a time (OUT/.sweep.lock).
"""

from __future__ import annotations

import collections
import fcntl
import hashlib
import importlib.util
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lmx.errors import ConfigError
from lmx.sweep import status as trial_status
from lmx.sweep.launchers import LAUNCHERS, Job
from lmx.sweep.loader import load_sweep_file, resolve_trials
from lmx.sweep.spec import Sweep, Trial, format_value
from lmx.train.ensemble import ensemble_groups as train_ensemble_groups

try:  # store: lmx/sweep/store.py (the results store); the runner works without it
    from lmx.sweep.store import write_store
except ModuleNotFoundError as exc:
    if exc.name != "lmx.sweep.store":
        raise
    write_store = None

LMX_ROOT = Path(__file__).resolve().parents[2]  # the directory holding this lmx package
LOCK_FILE = ".sweep.lock"
ENSEMBLE_MODULE = "lmx.train.ensemble"


# --- commands ---------------------------------------------------------------------------------


def has_run(run_dir: Path) -> bool:
    """The run directory already holds a run (config.json), so `lmx train` must be given --resume."""
    return (Path(run_dir) / "config.json").is_file()


def train_command(base: str, trial: Trial) -> list[str]:
    """The `lmx train` command of a trial: every setting (fixed, own, derived) as --set."""
    argv = [sys.executable, "-m", "lmx.cli", "train", "--config", base]
    for assignment in trial.assignments():
        argv += ["--set", assignment]
    argv += ["--run-dir", str(trial.run_dir), "--quiet"]
    return argv + (["--resume"] if has_run(trial.run_dir) else [])


def child_env() -> dict:
    """This environment, with the directory of this lmx first on PYTHONPATH when it is a source checkout
    (so the trials run the same lmx as the sweep)."""
    env = dict(os.environ)
    if (LMX_ROOT / "pyproject.toml").is_file():
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if str(LMX_ROOT) not in paths:
            env["PYTHONPATH"] = os.pathsep.join([str(LMX_ROOT), *paths])
    return env


def ensemble_groups(trials: list[Trial]) -> list[list[Trial]]:
    """Trials whose configs differ only in ENSEMBLE_KEYS (and run-location keys), grouped, in order: the
    grouping lmx.train.ensemble itself accepts."""
    return [[trials[i] for i in group] for group in train_ensemble_groups([t.config for t in trials])]


def ensemble_id(members: list[Trial]) -> str:
    return "ens-" + hashlib.sha256(" ".join(sorted(t.id for t in members)).encode()).hexdigest()[:10]


def ensemble_job(members: list[Trial], out: Path, retries: int) -> Job:
    """Write OUT/ensembles/ID.json ({"members": [{"config", "run_dir"}], "resume"}) and return its job."""
    group = ensemble_id(members)
    spec_path = out / "ensembles" / f"{group}.json"
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec = {"members": [{"config": t.config.to_dict(), "run_dir": str(t.run_dir)} for t in members],
            "resume": any(has_run(t.run_dir) for t in members)}
    spec_path.write_text(json.dumps(spec, indent=2))
    return Job(trials=members, argv=[sys.executable, "-m", ENSEMBLE_MODULE, str(spec_path)],
               log=spec_path.with_suffix(".log"), ensemble=group, retries_left=retries, resume=spec["resume"])


def trial_job(base: str, trial: Trial, retries: int) -> Job:
    argv = train_command(base, trial)
    return Job(trials=[trial], argv=argv, log=trial.run_dir / "trial.log", retries_left=retries,
               resume="--resume" in argv)


# --- outcomes ---------------------------------------------------------------------------------


def outcome(returncode: int, run_dir: Path, tail: str) -> tuple[str, str | None]:
    """(status, error) of a finished trial process: exit 0 with summary.json status completed -> done;
    status preempted, or killed by SIGTERM (or the 143 of an expired preemption grace) -> preempted;
    anything else -> failed, with the log's tail as the error."""
    try:
        summary_status = json.loads((Path(run_dir) / "summary.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        summary_status = None
    if returncode == 0 and summary_status == "completed":
        return trial_status.DONE, None
    if (returncode == 0 and summary_status == "preempted") or returncode in (-signal.SIGTERM, 143):
        return trial_status.PREEMPTED, None
    if returncode == 0:
        return trial_status.FAILED, f"exited 0 without a completed summary.json (status {summary_status!r})\n{tail}"
    how = f"killed by {signal.Signals(-returncode).name}" if returncode < 0 else f"exit code {returncode}"
    return trial_status.FAILED, f"{how}\n{tail}" if tail else how


# --- the plan ---------------------------------------------------------------------------------


def plan(trials: list[Trial], retry_failed: bool) -> list[tuple[Trial, str, str]]:
    """(trial, state, action) for each trial; state is new/done/running/interrupted/preempted/failed,
    action run/resume/rerun/skip."""
    rows = []
    for trial in trials:
        status = trial_status.read_trial_status(trial.run_dir)
        state = trial_status.trial_state(status)
        if status is None or state == trial_status.PENDING:
            state = "new"
        if state in (trial_status.DONE, trial_status.RUNNING):
            action = "skip"
        elif state == trial_status.FAILED:
            action = "rerun" if retry_failed else "skip"
        else:
            action = "resume" if has_run(trial.run_dir) else "run"
        rows.append((trial, state, action))
    return rows


def _overrides_text(overrides: dict) -> str:
    return " ".join(f"{key}={format_value(value)}" for key, value in overrides.items())


def print_plan(sweep: Sweep, file: Path, out: Path, rows, print_fn) -> None:
    print_fn(f"sweep {sweep.name} ({file}): {len(rows)} trial{'s' * (len(rows) != 1)}, base {sweep.base}, "
             f"out {out}")
    if sweep.fixed:
        print_fn(f"  fixed: {_overrides_text(sweep.fixed)}")
    width = max(len(trial.name) for trial, _, _ in rows)
    print_fn(f"  {'state':<11}  {'action':<6}  {'name':<{width}}  {'id':<10}  overrides")
    for trial, state, action in rows:
        derived = f"  (derived: {_overrides_text(trial.derived)})" if trial.derived else ""
        print_fn(f"  {state:<11}  {action:<6}  {trial.name:<{width}}  {trial.id:<10}  "
                 f"{_overrides_text(trial.overrides)}{derived}")


def _tally(rows) -> str:
    counts = collections.Counter(action for _, _, action in rows)
    failed = sum(state == trial_status.FAILED and action == "skip" for _, state, action in rows)
    parts = [f"{counts['run']} to run", f"{counts['resume']} to resume", f"{counts['rerun']} to rerun",
             f"{sum(state == trial_status.DONE for _, state, _ in rows)} done"]
    if failed:
        parts.append(f"{failed} failed (not rerun without --retry-failed)")
    return ", ".join(parts)


# --- running ----------------------------------------------------------------------------------


class SweepLock:
    """OUT/.sweep.lock, held (flock) by the one `lmx sweep run` working in OUT."""

    def __init__(self, out: Path):
        self.path = Path(out) / LOCK_FILE
        self.fd: int | None = None

    def __enter__(self) -> SweepLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(f"--out: {self.path.parent} is in use by another lmx sweep run ({holder}); "
                              "wait for it or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def write_manifest(out: Path, sweep: Sweep, file: Path, trials: list[Trial]) -> None:
    """OUT/sweep.json: name, file, base, created (kept from the first run), the trials."""
    path = out / trial_status.SWEEP_FILE
    created = trial_status.now_iso()
    try:
        created = json.loads(path.read_text()).get("created") or created
    except (OSError, ValueError, AttributeError):
        pass
    manifest = {"name": sweep.name, "file": str(file), "base": sweep.base, "created": created,
                "trials": [{"name": t.name, "id": t.id, "overrides": t.overrides} for t in trials]}
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, path)


class _Bookkeeper:
    """The launcher's callbacks: trial.json on start and finish, reruns, the store, progress lines."""

    def __init__(self, out: Path, base: str, launcher: str, jobs: collections.deque, total: int, print_fn):
        self.out, self.base, self.launcher, self.jobs, self.total = out, base, launcher, jobs, total
        self.print_fn = print_fn
        self.started: dict[str, float] = {}
        self.count = 0  # jobs started; `total` counts the jobs, reruns included

    def on_start(self, job: Job, pid: int, cpus: list[int]) -> None:
        self.count += 1
        for trial in job.trials:
            status = trial_status.read_trial_status(trial.run_dir) or trial_status.new_trial_status(
                trial.name, trial.id, trial.overrides, self.launcher)
            status.update(status=trial_status.RUNNING, attempts=int(status.get("attempts") or 0) + 1,
                          started=trial_status.now_iso(), finished=None, error=None, pid=pid,
                          host=socket.gethostname(), launcher=self.launcher, ensemble=job.ensemble)
            trial_status.write_trial_status(trial.run_dir, status)
            self.started[trial.id] = time.monotonic()
        verb = "resume" if job.resume else "start"
        names = ", ".join(t.name for t in job.trials)
        what = f"ensemble {job.ensemble} ({names})" if job.ensemble else names
        self.print_fn(f"[{self.count}/{self.total}] {verb} {what} (pid {pid}, cpus {','.join(map(str, cpus))})")

    def on_finish(self, job: Job, returncode: int, tail: str) -> None:
        failed = []
        for trial in job.trials:
            state, error = outcome(returncode, trial.run_dir, tail)
            status = trial_status.read_trial_status(trial.run_dir) or {}
            elapsed = time.monotonic() - self.started.pop(trial.id, time.monotonic())
            status.update(status=state, finished=trial_status.now_iso(), error=error,
                          wall_s=round(float(status.get("wall_s") or 0.0) + elapsed, 3))
            trial_status.write_trial_status(trial.run_dir, status)
            last = (error or "").strip().splitlines()[-1:] or [""]
            detail = f": {last[0][:200]}" if error else ""
            self.print_fn(f"    {state} {trial.name} in {trial_status.format_seconds(elapsed)}{detail}")
            if state == trial_status.FAILED:
                failed.append(trial)
        if failed and job.retries_left > 0:
            self.print_fn(f"    rerunning {', '.join(t.name for t in failed)} ({job.retries_left} "
                          f"retr{'ies' if job.retries_left > 1 else 'y'} left)")
            self.jobs.append(self._rerun(job, failed))
            self.total += 1
        self._write_store()

    def _rerun(self, job: Job, failed: list[Trial]) -> Job:
        if len(failed) > 1:  # members of an ensemble job
            return ensemble_job(failed, self.out, job.retries_left - 1)
        return trial_job(self.base, failed[0], job.retries_left - 1)

    def _write_store(self) -> None:
        if write_store is None:
            return
        try:
            write_store(self.out)
        except Exception as exc:  # a store problem must not stop the trials; `lmx sweep table` rebuilds it
            self.print_fn(f"lmx sweep: could not update the results store: {type(exc).__name__}: {exc}")


def build_jobs(sweep: Sweep, trials: list[Trial], out: Path, retries: int, print_fn) -> list[Job]:
    """One job per trial, or per ensemble group of two or more trials when `sweep.ensemble` is set and
    lmx.train.ensemble is available (else the trials run one by one, with a notice)."""
    if not sweep.ensemble:
        return [trial_job(sweep.base, t, retries) for t in trials]
    groups = ensemble_groups(trials)
    if any(len(g) > 1 for g in groups) and importlib.util.find_spec(ENSEMBLE_MODULE) is None:
        print_fn(f"lmx sweep: ensemble=True but {ENSEMBLE_MODULE} is not available; "
                 f"running the {len(trials)} trials one by one")
        return [trial_job(sweep.base, t, retries) for t in trials]
    return [ensemble_job(g, out, retries) if len(g) > 1 else trial_job(sweep.base, g[0], retries) for g in groups]


def _print(line: str) -> None:
    print(line, flush=True)  # progress lines reach a redirected log as they happen


def run_sweep(file: str | Path, out: str | Path, launcher: str = "local", workers: int = 1, dry_run: bool = False,
              retries: int = 0, retry_failed: bool = False, print_fn: Callable[[str], None] = _print,
              options=None) -> int:
    """Run or resume the trials of sweep file `file` in sweep directory `out`. Returns 0 when every trial is
    done, 1 otherwise (a trial failed, was preempted or runs elsewhere). Every problem of the sweep file is
    a ConfigError before anything is written; `dry_run` prints the plan (and, for the tpu launcher, every
    command it would run) and writes nothing. `options`: RayOptions or TpuOptions for those launchers."""
    file, out = Path(file), Path(out)
    if launcher not in LAUNCHERS:
        raise ConfigError(f"--launcher: {launcher!r} is not available in this version (available: "
                          f"{', '.join(LAUNCHERS)})")
    if workers < 1:
        raise ConfigError(f"--workers: must be >= 1, got {workers}")
    if retries < 0:
        raise ConfigError(f"--retries: must be >= 0, got {retries}")
    sweep = load_sweep_file(file)
    trials = resolve_trials(sweep, out, source=str(file))
    rows = plan(trials, retry_failed)
    if launcher == "tpu" and sweep.ensemble:
        raise ConfigError("--launcher tpu: ensemble=True sweeps run with the local or ray launcher")
    extra = {"options": options} if launcher != "local" else {}
    if launcher == "tpu":
        extra["sweep"] = sweep.name
    pool = LAUNCHERS[launcher](workers=workers, print_fn=print_fn, env=child_env(), **extra)
    if dry_run:
        print_plan(sweep, file, out, rows, print_fn)
        if hasattr(pool, "dry_run_lines"):
            to_run = [trial for trial, _, action in rows if action != "skip"]
            for line in pool.dry_run_lines([trial_job(sweep.base, t, 0) for t in to_run]):
                print_fn(line)
        print_fn(f"dry run: {_tally(rows)}; nothing started")
        return 0
    if hasattr(pool, "check_reachable"):  # a launcher's cluster, checked before anything is written
        pool.check_reachable()
    with SweepLock(out):
        rows = plan(trials, retry_failed)  # again, under the lock
        write_manifest(out, sweep, file, trials)
        for trial in trials:
            if trial_status.read_trial_status(trial.run_dir) is None:
                trial_status.write_trial_status(trial.run_dir, trial_status.new_trial_status(
                    trial.name, trial.id, trial.overrides, launcher))
        to_run = [trial for trial, _, action in rows if action != "skip"]
        print_fn(f"sweep {sweep.name}: {len(trials)} trials: {_tally(rows)} ({workers} worker"
                 f"{'s' * (workers != 1)}, {launcher})")
        for trial, state, _ in rows:
            if state == trial_status.RUNNING:
                status = trial_status.read_trial_status(trial.run_dir) or {}
                print_fn(f"  {trial.name}: still running (pid {status.get('pid')} on {status.get('host')}); skipped")
        jobs = collections.deque(build_jobs(sweep, to_run, out, retries, print_fn))
        keeper = _Bookkeeper(out, sweep.base, launcher, jobs, len(jobs), print_fn)
        stopped_by = pool.run(jobs, keeper.on_start, keeper.on_finish)
    return _report(sweep, out, trials, stopped_by, print_fn)


def _report(sweep: Sweep, out: Path, trials: list[Trial], stopped_by: str | None, print_fn) -> int:
    states = collections.Counter(trial_status.trial_state(trial_status.read_trial_status(t.run_dir)) for t in trials)
    summary = ", ".join(f"{states[s]} {s}" for s in trial_status.STATES if states[s])
    print_fn(f"sweep {sweep.name}: {summary}" + (f" (stopped by {stopped_by}; run again to resume)"
                                                 if stopped_by else "") + f"; status: lmx sweep status {out}")
    for trial in trials:
        status = trial_status.read_trial_status(trial.run_dir) or {}
        if status.get("status") == trial_status.FAILED:
            print_fn(f"  failed: {trial.name} (log: {trial.run_dir / 'trial.log'})")
    return 0 if states[trial_status.DONE] == len(trials) else 1

