"""Two local processes x 2 CPU devices (gloo collectives) behave like one process with 4 devices."""

import json
import sys

import numpy as np
import pytest

from tests.parallel.conftest import WORKER, free_port, last_json, run_processes, subprocess_env


def _run_two(scenario):
    port = free_port()
    results = run_processes(lambda i: [sys.executable, str(WORKER), scenario, f"localhost:{port}", str(i)])
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    return [last_json(out) for _, out, _ in results]


def test_global_batch_rows_from_two_processes():
    outs = _run_two("mp_batch")
    for p, out in enumerate(outs):
        assert (out["process"], out["processes"], out["devices"]) == (p, 2, 4)
        # process_batch_rows: each process supplies the rows of its devices' slices -> identical order
        assert out["block_rows"] == list(range(4 * p, 4 * p + 4))
        assert out["block_order"] == list(range(8))
        # the data pipeline hands process p exactly these contiguous rows (lmx.data.pipeline)
        assert out["pipeline_rows"] == out["block_rows"]


def test_processes_disagreeing_on_the_config_fail_naming_the_processes():
    outs = _run_two("mp_config")
    for out in outs:
        assert out["error"].startswith("config: processes [1] have a config that differs from process 0's")
    assert "this is process 1" in outs[1]["error"]


def _train(run_dir, cache_dir, n_processes, devices_each):
    import subprocess

    sets = ["train.steps=5", "train.log_every=1", "train.eval_every=5", "train.checkpoint_every=5",
            f"data.cache_dir={cache_dir}", "eval.sample_tokens=0"]
    argv = [sys.executable, "-m", "lmx.cli", "train", "--config", "tiny", "--run-dir", str(run_dir), "--quiet"]
    for s in sets:
        argv += ["--set", s]
    if n_processes == 1:
        proc = subprocess.run(argv, env=subprocess_env(devices_each), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    else:
        port = free_port()
        results = run_processes(
            lambda i: argv, n=n_processes, devices=devices_each,
            env_for=lambda i: {"LMX_COORDINATOR": f"localhost:{port}", "LMX_NUM_PROCESSES": str(n_processes),
                               "LMX_PROCESS_ID": str(i)})
        for rc, _, err in results:
            assert rc == 0, err[-3000:]
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in lines if "loss" in x]
    return losses, json.loads((run_dir / "summary.json").read_text())


def test_lmx_train_on_two_processes_matches_one_process_and_restores_in_one(tmp_path, cache_dir):
    import jax
    from flax import nnx

    import lmx

    single_losses, single = _train(tmp_path / "single", cache_dir, 1, 4)
    multi_losses, multi = _train(tmp_path / "multi", cache_dir, 2, 2)
    assert single["versions"]["devices"] == 4 and single["versions"]["processes"] == 1
    assert multi["versions"]["devices"] == 4 and multi["versions"]["processes"] == 2
    assert len(multi_losses) == len(single_losses) == 5
    assert multi_losses == pytest.approx(single_losses, abs=1e-5, rel=0)
    assert multi["val_loss"] == pytest.approx(single["val_loss"], abs=1e-5)
    # the two-process checkpoint restores in this (one-device) process
    a, b = lmx.load(tmp_path / "multi"), lmx.load(tmp_path / "single")
    assert a.step == b.step == 5
    for x, y in zip(jax.tree.leaves(nnx.state(a.model)), jax.tree.leaves(nnx.state(b.model))):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5)


def _elastic(run_dir, cache_dir, processes, stop_at=0, resume=False):
    """tiny on `processes` processes x (4 / processes) devices; returns (global batches by step, losses, outs)."""
    import subprocess

    def argv(coordinator, i):
        return [sys.executable, str(WORKER), "elastic_train", coordinator, str(i), str(processes), str(run_dir),
                cache_dir, str(stop_at), "1" if resume else "0"]

    if processes == 1:
        proc = subprocess.run(argv("-", 0), env=subprocess_env(4), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs = [last_json(proc.stdout)]
    else:
        port = free_port()
        results = run_processes(lambda i: argv(f"localhost:{port}", i), n=processes, devices=4 // processes)
        for rc, _, err in results:
            assert rc == 0, err[-3000:]
        outs = [last_json(out) for _, out, _ in results]
    assert all(out["devices"] == 4 and out["processes"] == processes for out in outs)
    batches = {}
    for out in outs:
        for step, rows in out["batches"].items():
            batches.setdefault(int(step), {}).update({int(r): row for r, row in rows.items()})
    batches = {step: [rows[r] for r in sorted(rows)] for step, rows in batches.items()}
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = {row["step"]: row["loss"] for row in rows if "loss" in row}
    return batches, losses, outs


def test_a_run_resumes_on_another_process_count_with_the_same_global_batches(tmp_path, cache_dir):
    """2 processes x 2 devices for 4 steps, then 1 process x 4 devices (and the reverse): every later global
    batch holds the token ids the uninterrupted run saw, and the losses match it."""
    import shutil

    reference, reference_losses, _ = _elastic(tmp_path / "reference", cache_dir, 1)  # 1 x 4, uninterrupted
    assert sorted(reference) == list(range(1, 9)) and all(len(rows) == 4 for rows in reference.values())

    two_then_one = tmp_path / "two_then_one"
    first, _, outs = _elastic(two_then_one, cache_dir, 2, stop_at=4)
    assert {out["status"] for out in outs} == {"preempted"}
    second, losses, outs = _elastic(two_then_one, cache_dir, 1, resume=True)
    assert outs[0]["resumed_from"] == 4
    assert first == {step: reference[step] for step in range(1, 5)}
    assert second == {step: reference[step] for step in range(5, 9)}
    assert sorted(losses) == list(range(1, 9))
    assert [losses[s] for s in range(1, 9)] == pytest.approx([reference_losses[s] for s in range(1, 9)], abs=1e-5)

    one_then_two = tmp_path / "one_then_two"  # the reference run as it stood at step 4, resumed on 2 processes
    shutil.copytree(tmp_path / "reference", one_then_two)
    shutil.rmtree(one_then_two / "checkpoints" / "8")
    later, losses, outs = _elastic(one_then_two, cache_dir, 2, resume=True)
    assert {out["resumed_from"] for out in outs} == {4}
    assert later == {step: reference[step] for step in range(5, 9)}
    assert [losses[s] for s in range(1, 9)] == pytest.approx([reference_losses[s] for s in range(1, 9)], abs=1e-5)
