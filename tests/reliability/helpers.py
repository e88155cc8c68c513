"""Run `lmx train` in a subprocess and interrupt it at chosen steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Many fast steps, frequent asynchronous checkpoints: kills land mid-step or mid-save.
RUN_OVERRIDES = [
    "train.steps=120", "train.log_every=1", "train.checkpoint_every=7", "train.eval_every=1000",
    "train.async_checkpointing=true", "train.keep_checkpoints=3", "eval.sample_tokens=0",
]


def train_command(run_dir: Path, cache_dir: str, resume: bool = False, extra=()) -> list[str]:
    command = [sys.executable, "-m", "lmx.cli", "train", "--config", "tiny", "--quiet",
               "--run-dir", str(run_dir), "--set", f"data.cache_dir={cache_dir}"]
    for override in [*RUN_OVERRIDES, *extra]:
        command += ["--set", override]
    return command + (["--resume"] if resume else [])


def logged_steps(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    # polled while the run writes: a last line without its newline is still being written
    complete = path.read_text().split("\n")[:-1]
    steps = [json.loads(line)["step"] for line in complete if line.strip()]
    return max(steps, default=0)


def run_until(command: list[str], run_dir: Path, step: int, sig: int, timeout: float = 240) -> tuple[int, str]:
    """Start `command`, send `sig` once metrics.jsonl reaches `step`; return (exit code, stderr)."""
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if logged_steps(run_dir) >= step:
            os.killpg(proc.pid, sig)
            break
        time.sleep(0.005)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    return proc.returncode, err


def run(command: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def losses(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]
