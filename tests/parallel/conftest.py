"""Helpers: run a worker script in a subprocess with N forced host devices (the pytest process keeps one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("worker.py")


def subprocess_env(devices: int, **extra: str) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    started = ("LMX_COORDINATOR", "LMX_NUM_PROCESSES", "LMX_PROCESS_ID", "LMX_DISTRIBUTED", "LMX_LOCAL_DEVICE_IDS",
               "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "TPU_WORKER_HOSTNAMES")
    for key in [k for k in env if k in started]:
        del env[key]
    env.update(extra)
    return env


def run_worker(scenario: str, *args: str, devices: int = 8, timeout: int = 600) -> dict:
    """Run tests/parallel/worker.py SCENARIO ARGS...; returns the JSON object it prints last."""
    proc = subprocess.run(
        [sys.executable, str(WORKER), scenario, *args],
        env=subprocess_env(devices), cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(f"worker {scenario} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_processes(argv_for, n: int = 2, devices: int = 2, timeout: int = 600, env_for=None):
    """Start n processes (argv_for(i) -> argv list), each with `devices` forced host devices.

    Returns [(returncode, stdout, stderr)] in process order.
    """
    procs = []
    for i in range(n):
        extra = env_for(i) if env_for else {}
        procs.append(subprocess.Popen(argv_for(i), env=subprocess_env(devices, **extra), cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            results.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return results


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])
