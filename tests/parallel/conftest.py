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
    for key in [k for k in env if k.startswith(("LMX_COORDINATOR", "LMX_NUM_PROCESSES", "LMX_PROCESS_ID"))]:
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
