"""One writer per run directory: an OS lock, refused second processes naming the holder, no stale lock after
kill -9, and readers (eval, generate, lmx.load) that need no lock."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import lmx
from lmx.cli import main
from lmx.errors import CheckpointError
from lmx.train.run_dir import RunLock
from tests.reliability.helpers import ROOT

HOLD = "import sys, time; from lmx.train.run_dir import RunLock; RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)"


def _holder(run_dir):
    """A process that takes the run directory's lock and sleeps."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def _wait_for_lock_holder(run_dir, pid, proc, timeout=240):
    deadline = time.monotonic() + timeout
    lock = run_dir / ".lock"
    while time.monotonic() < deadline and proc.poll() is None:
        if lock.is_file() and lock.read_text().split()[:1] == [str(pid)]:
            return
        time.sleep(0.01)
    raise AssertionError(f"process {pid} did not take the lock (exit code {proc.poll()})")


def test_a_locked_run_directory_is_refused_naming_the_holder_and_kill_9_leaves_no_stale_lock(trained_run, tmp_path,
                                                                                             capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    holder = _holder(run_dir)
    try:
        assert main(["train", "--resume", "--run-dir", str(run_dir), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert f"in use by another lmx train (pid {holder.pid})" in err
        # readers take no lock
        assert main(["eval", "--run", str(run_dir), "--batches", "1"]) == 0
        assert lmx.load(run_dir).step == 8
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with RunLock(run_dir) as lock:  # the kernel released it with the killed process
        assert lock.held
        with pytest.raises(CheckpointError, match=f"pid {os.getpid()}"):
            RunLock(run_dir).acquire()


def _command(run_dir):
    return [sys.executable, "-m", "lmx.cli", "train", "--resume", "--run-dir", str(run_dir), "--quiet"]


def test_two_resumes_on_one_directory_one_runs_one_is_refused(trained_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    shutil.rmtree(run_dir / "checkpoints" / "8")  # the run continues from step 4
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(_command(run_dir), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    try:
        _wait_for_lock_holder(run_dir, first.pid, first)
        first.send_signal(signal.SIGSTOP)  # hold it there: the second one starts while the first holds the lock
        try:
            second = subprocess.run(_command(run_dir), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        finally:
            first.send_signal(signal.SIGCONT)
        _, first_err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert second.returncode == 2, second.stderr[-2000:]
    assert len(second.stderr.strip().splitlines()) == 1, second.stderr
    assert f"pid {first.pid}" in second.stderr
    assert first.returncode == 0, first_err[-2000:]

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for prefix in ("loss", "val_loss"):
        steps = [row["step"] for row in rows if prefix in row]
        assert len(steps) == len(set(steps)), f"duplicate {prefix} rows: {steps}"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["4", "8"]  # no temporary folder
    for a, b in zip(jax.tree.leaves(lmx.load(trained_run).model), jax.tree.leaves(lmx.load(run_dir).model),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
