"""The Ray launcher: each trial's `lmx train` command runs as a Ray task on an existing cluster.

Start the cluster first (`ray start --head` on one machine, `ray start --address HEAD:6379` on the
others, or a Ray cluster across Cloud TPU/GPU hosts); `lmx sweep run ... --launcher ray` connects to
it (`--ray-address`, default: the RAY_ADDRESS environment variable, else "auto"). Ray schedules the
tasks; lmx only says what each one needs (`--ray-cpus`, `--ray-gpus`). Nothing here schedules:
`--workers` does not apply, Ray runs as many tasks at once as the cluster's resources allow.

A task runs the same command and environment as the local launcher (thread limits for its CPUs, the
death signal: the trial dies with its Ray worker), so the trial's run directory must be on a file
system every node reaches (one machine, NFS, a mounted bucket). The sweep process is the Ray driver:
it records each outcome as its task finishes. A task whose worker or node died is recorded as
preempted (exit status NODE_LOST), to be resumed by the next `lmx sweep run`.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lmx.errors import ConfigError
from lmx.sweep.launchers.base import Job
from lmx.sweep.launchers.local import launch_argv, log_tail, thread_env

NODE_LOST = -int(signal.SIGTERM)  # how a lost worker or node is reported to the runner: as a preemption


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None     # None: $RAY_ADDRESS, else "auto"
    cpus: float = 1.0
    gpus: float = 0.0

    def check(self) -> None:
        if self.cpus <= 0:
            raise ConfigError(f"--ray-cpus: must be > 0, got {self.cpus}")
        if self.gpus < 0:
            raise ConfigError(f"--ray-gpus: must be >= 0, got {self.gpus}")


def _run_job(argv: list[str], env: dict, log_path: str) -> tuple[int, int]:
    """The task body, on a Ray worker: run `argv` (dying with this worker), output appended to
    `log_path`; returns (byte offset where this attempt's output starts, exit status)."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n=== lmx sweep (ray, node {os.uname().nodename}): {' '.join(argv)}\n".encode())
        log.flush()
        offset = log.tell()
        code = subprocess.run(launch_argv(argv, [], os.getpid()), stdin=subprocess.DEVNULL, stdout=log,
                              stderr=subprocess.STDOUT, env={**os.environ, **env}).returncode
    return offset, code


class RayLauncher:
    """`run(jobs, on_start, on_finish)` as the local launcher's: submits every job (and the reruns
    `on_finish` appends) as a Ray task and reports each as it finishes. SIGINT/SIGTERM cancel the
    running tasks (their trials are killed and resume on the next run)."""

    name = "ray"

    def __init__(self, workers: int = 1, print_fn: Callable[[str], None] = print, env: dict | None = None,
                 options: RayOptions | None = None):
        self.print_fn = print_fn
        self.options = options or RayOptions()
        self.options.check()
        self.env = thread_env(dict(os.environ if env is None else env), max(1, int(self.options.cpus)))

    def address(self) -> str:
        return self.options.address or os.environ.get("RAY_ADDRESS") or "auto"

    def check_reachable(self) -> None:
        """A HOST:PORT address must accept connections (ray.init would wait minutes for a cluster that is not
        there); "auto" and ray:// addresses are left to ray.init."""
        host, sep, port = self.address().rpartition(":")
        if not sep or not port.isdigit() or "://" in host:
            return
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as exc:
            raise ConfigError(f"--ray-address: no Ray cluster at {self.address()!r} ({exc.strerror or exc}); start "
                              "one with `ray start --head` or name it with --ray-address HOST:PORT") from None

    def run(self, jobs: collections.deque, on_start: Callable[[Job, int, list[int]], None],
            on_finish: Callable[[Job, int, str], None]) -> str | None:
        import ray  # optional dependency (pip install 'lmx[ray]'), needed by this launcher only

        address = self.address()
        self.check_reachable()
        try:
            ray.init(address=address, log_to_driver=False, ignore_reinit_error=True, logging_level="ERROR",
                     include_dashboard=False)
        except (ConnectionError, RuntimeError) as exc:
            raise ConfigError(f"--ray-address: no Ray cluster at {address!r} ({str(exc).splitlines()[0]}); start "
                              "one with `ray start --head` or name it with --ray-address HOST:PORT") from None
        task = ray.remote(num_cpus=self.options.cpus, num_gpus=self.options.gpus, max_retries=0)(_run_job)
        pending: dict = {}
        stopped: list[int] = []
        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {sig: signal.signal(sig, lambda signum, frame: stopped.append(signum))
                        for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while (jobs and not stopped) or pending:
                while jobs and not stopped:
                    job = jobs.popleft()
                    pending[task.remote(job.argv, self.env, str(job.log))] = job
                    on_start(job, os.getpid(), [])  # the driver's pid: the trial runs while this sweep does
                if stopped and pending:
                    self.print_fn(f"lmx sweep: {signal.Signals(stopped[0]).name}: cancelling "
                                  f"{len(pending)} running trial{'s' * (len(pending) != 1)}")
                    for ref in pending:
                        ray.cancel(ref, force=True)
                done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in done:
                    job = pending.pop(ref)
                    try:
                        offset, code = ray.get(ref)
                    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                            ray.exceptions.TaskCancelledError):
                        offset, code = 0, NODE_LOST
                    except ray.exceptions.RayError as exc:  # the task itself failed to run the command
                        with open(job.log, "a", encoding="utf-8") as log:
                            log.write(f"ray: {type(exc).__name__}: {str(exc).strip()[-2000:]}\n")
                        offset, code = 0, 1
                    on_finish(job, code, log_tail(job.log, offset))
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            ray.shutdown()
        return signal.Signals(stopped[0]).name if stopped else None
