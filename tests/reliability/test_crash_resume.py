"""kill -9 at arbitrary steps, then --resume: bit-identical parameters and the same loss at every step."""

import random
import signal

import jax
import numpy as np
import pytest

import lmx
from tests.reliability.helpers import RUN_OVERRIDES, logged_steps, losses, run, run_until, train_command

FINAL_STEP = int(next(o for o in RUN_OVERRIDES if o.startswith("train.steps=")).split("=")[1])


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache_dir):
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    result = run(train_command(run_dir, cache_dir))
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir


def _params(run_dir):
    return jax.device_get(jax.tree.leaves(lmx.load(run_dir).model))


def _kill_and_resume(run_dir, cache_dir, kill_points):
    for i, point in enumerate(kill_points):
        code, err = run_until(train_command(run_dir, cache_dir, resume=i > 0), run_dir, point, signal.SIGKILL)
        # the kill landed: the process died of SIGKILL, after step `point` and before the last step
        assert code == -signal.SIGKILL, f"kill {i} (at step {point}) did not land: exit {code}\n{err[-2000:]}"
        reached = logged_steps(run_dir)
        assert point <= reached < FINAL_STEP, (i, point, reached)
        assert not (run_dir / "summary.json").exists()  # written only by a run that finished
        checkpoints = run_dir / "checkpoints"
        saved = [int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()] if checkpoints.is_dir() else []
        assert all(step < FINAL_STEP for step in saved), saved
    result = run(train_command(run_dir, cache_dir, resume=True))
    assert result.returncode == 0, result.stderr[-2000:]
    assert logged_steps(run_dir) == FINAL_STEP


def _assert_same_run(reference, run_dir):
    assert losses(run_dir) == losses(reference)
    for a, b in zip(_params(reference), _params(run_dir), strict=True):
        np.testing.assert_array_equal(a, b)


def test_three_kills_then_resume_is_bit_exact(reference, tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    _kill_and_resume(run_dir, cache_dir, [random.Random(0).randint(2, 30), 55, 90])
    _assert_same_run(reference, run_dir)


@pytest.mark.slow
def test_ten_kills_then_resume_is_bit_exact(reference, tmp_path, cache_dir):
    points = sorted(random.Random(1).sample(range(2, 118), 10))
    run_dir = tmp_path / "run"
    _kill_and_resume(run_dir, cache_dir, points)
    _assert_same_run(reference, run_dir)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_preemption_signal_saves_and_exits_zero(reference, tmp_path, cache_dir, sig):
    import json

    run_dir = tmp_path / "run"
    code, err = run_until(train_command(run_dir, cache_dir), run_dir, 40, sig)
    assert code == 0, err[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "preempted", summary
    stopped = summary["steps"]
    assert 40 <= stopped < 120
    steps = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == stopped  # saved exactly at the step boundary where it stopped
    assert "--resume" in err
    result = run(train_command(run_dir, cache_dir, resume=True))
    assert result.returncode == 0, result.stderr[-2000:]
    _assert_same_run(reference, run_dir)
