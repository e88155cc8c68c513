"""The local launcher: `workers` trial processes at a time on this machine.

Worker slot i gets its own CPUs (a disjoint share of this process's affinity set, taken with
`os.sched_setaffinity` by a small `python -c` launcher that then execs the trial command) and an environment that keeps XLA, OpenMP and BLAS
to that many threads, so trials do not fight over cores. Each child:
- writes stdout and stderr to its job's log (RUN/trial.log);
- runs in its own session, so a Ctrl-C in the terminal reaches only the sweep, which forwards one
  SIGTERM: the trials save a checkpoint at the next step and exit (preempted); a second Ctrl-C kills them;
- dies with the sweep process (`prctl(PR_SET_PDEATHSIG, SIGKILL)`, armed by the launcher and kept across
  exec: `kill -9` of the sweep leaves no orphan trial holding its run directory). The death signal follows
  the thread that started the child, so the pool starts children from the thread that runs it, and waits.
"""

from __future__ import annotations

import collections
import datetime
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from lmx.sweep.launchers.base import Job

PR_SET_PDEATHSIG = 1
TAIL_LINES = 20
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "TF_NUM_INTRAOP_THREADS")


def cpu_slots(workers: int, cpus=None) -> list[list[int]]:
    """Split the CPUs this process may use into `workers` disjoint sets (sizes differ by at most one); with
    more workers than CPUs, slots share CPUs round-robin."""
    cpus = sorted(os.sched_getaffinity(0) if cpus is None else cpus)
    if workers <= len(cpus):
        return [cpus[i * len(cpus) // workers:(i + 1) * len(cpus) // workers] for i in range(workers)]
    return [[cpus[i % len(cpus)]] for i in range(workers)]


def thread_env(env: dict, threads: int) -> dict:
    """`env` with XLA's CPU intra-op threads and the OpenMP/BLAS pools limited to `threads` (other
    XLA_FLAGS kept)."""
    env = dict(env)
    flags = [flag for flag in env.get("XLA_FLAGS", "").split()
             if not flag.startswith(("--xla_cpu_multi_thread_eigen", "intra_op_parallelism_threads"))]
    flags += ["--xla_cpu_multi_thread_eigen=false", f"intra_op_parallelism_threads={threads}"]
    env["XLA_FLAGS"] = " ".join(flags)
    for name in THREAD_VARIABLES:
        env[name] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    return env


# Run in front of each trial command (a `python -c` that execs it, so no Python runs between fork and exec in
# this process, which may hold JAX's threads): arm the death signal, check the sweep is still there, take the
# slot's CPUs, exec. argv: SWEEP_PID CPUS COMMAND...
_LAUNCH = f"""
import ctypes, os, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl({PR_SET_PDEATHSIG}, {int(signal.SIGKILL)}, 0, 0, 0)
except (OSError, AttributeError):  # not Linux: no death signal
    pass
if os.getppid() != int(sys.argv[1]):  # the sweep died before the death signal was armed
    os._exit(1)
if sys.argv[2] and hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, [int(cpu) for cpu in sys.argv[2].split(",")])
os.execv(sys.argv[3], sys.argv[3:])
"""


def launch_argv(argv: list[str], cpus: list[int], parent: int) -> list[str]:
    """`argv` run with the death signal armed and pinned to `cpus` (the pid stays the trial's)."""
    executable = shutil.which(argv[0]) or argv[0]
    return [sys.executable, "-c", _LAUNCH, str(parent), ",".join(map(str, cpus)), executable, *argv[1:]]


def log_tail(path: Path, offset: int, lines: int = TAIL_LINES) -> str:
    """The last `lines` lines written to `path` after byte `offset`."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def _cpu_text(cpus: list[int]) -> str:
    if cpus and cpus == list(range(cpus[0], cpus[-1] + 1)) and len(cpus) > 1:
        return f"{cpus[0]}-{cpus[-1]}"
    return ",".join(map(str, cpus))


class _Running:
    def __init__(self, job: Job, process: subprocess.Popen, offset: int, slot: int):
        self.job, self.process, self.offset, self.slot = job, process, offset, slot


class LocalLauncher:
    """A pool of `workers` slots. `run(jobs, on_start, on_finish)` starts jobs from the deque as slots free
    up (`on_finish` may append reruns to it) until it is empty and nothing runs, or until SIGTERM/SIGINT:
    then it starts nothing more, sends each running trial one SIGTERM (a second signal: SIGKILL) and
    waits for them. Returns the name of the signal that stopped it, or None."""

    name = "local"

    def __init__(self, workers: int = 1, print_fn: Callable[[str], None] = print, cwd: Path | None = None,
                 env: dict | None = None, poll_seconds: float = 0.1):
        self.slots = cpu_slots(workers)
        self.print_fn = print_fn
        self.cwd = cwd
        self.env = dict(os.environ if env is None else env)
        self.poll_seconds = poll_seconds
        self._signals: list[int] = []

    def _start(self, job: Job, slot: int) -> _Running:
        cpus = self.slots[slot]
        job.log.parent.mkdir(parents=True, exist_ok=True)
        with open(job.log, "ab") as log:
            stamp = datetime.datetime.now().isoformat(timespec="seconds")
            log.write(f"\n=== lmx sweep {stamp}, cpus {_cpu_text(cpus)}: {' '.join(job.argv)}\n".encode())
            log.flush()
            offset = log.tell()
            process = subprocess.Popen(
                launch_argv(job.argv, cpus, os.getpid()), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, cwd=self.cwd, env=thread_env(self.env, len(cpus)), start_new_session=True)
        return _Running(job, process, offset, slot)

    def _handle(self, signum, frame) -> None:
        self._signals.append(signum)

    def _forward_signals(self, running: dict, forwarded: int) -> int:
        """Send SIGTERM (first signal) or SIGKILL (any later one) to every running child."""
        if len(self._signals) == forwarded:
            return forwarded
        if forwarded == 0:
            name = signal.Signals(self._signals[0]).name
            self.print_fn(f"lmx sweep: {name}: starting no more trials; {len(running)} running "
                          f"trial{'s' * (len(running) != 1)} save and stop (signal again to kill them)")
        sig = signal.SIGTERM if forwarded == 0 else signal.SIGKILL
        for entry in running.values():
            try:
                entry.process.send_signal(sig)
            except ProcessLookupError:
                pass
        return len(self._signals)

    def run(self, jobs: collections.deque, on_start: Callable[[Job, int, list[int]], None],
            on_finish: Callable[[Job, int, str], None]) -> str | None:
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self._handle)
        running: dict[int, _Running] = {}
        forwarded = 0
        try:
            while True:
                forwarded = self._forward_signals(running, forwarded)
                while jobs and not self._signals and len(running) < len(self.slots):
                    slot = min(set(range(len(self.slots))) - set(running))
                    job = jobs.popleft()
                    entry = self._start(job, slot)
                    running[slot] = entry
                    on_start(job, entry.process.pid, self.slots[slot])
                if not running:
                    break
                for slot, entry in list(running.items()):
                    code = entry.process.poll()
                    if code is not None:
                        del running[slot]
                        on_finish(entry.job, code, log_tail(entry.job.log, entry.offset))
                time.sleep(self.poll_seconds)
        finally:
            for entry in running.values():  # only on an error in this process: the children die with it
                entry.process.kill()
                entry.process.wait()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return signal.Signals(self._signals[0]).name if self._signals else None
