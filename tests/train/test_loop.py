"""The training loop end to end on configs/tiny.py: resume equivalence, determinism, checkpoints."""

import json
import shutil

import jax
import numpy as np
import pytest

import lmx
from lmx.errors import CheckpointError
from lmx.train.loop import train
from lmx.train.metrics import read_metrics


@pytest.fixture(scope="module")
def finished_run(tiny, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "full"
    config = tiny.replace(**{"train.log_every": 1})
    summary = train(config, run_dir=run_dir, show_progress=False)
    return config, run_dir, summary


def _params(run_dir, step=None):
    return jax.device_get(jax.tree.leaves(lmx.load(run_dir, step=step).model))


def test_run_directory_layout(finished_run):
    config, run_dir, summary = finished_run
    for name in ("config.json", "tokenizer", "checkpoints", "metrics.jsonl", "events", "summary.json"):
        assert (run_dir / name).exists(), name
    assert json.loads((run_dir / "config.json").read_text()) == config.to_dict()
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved["tokens_seen"] == config.train.steps * config.data.batch_size * config.data.seq_len
    assert saved["val_bits_per_byte"] > 0 and np.isfinite(saved["val_loss"])
    assert saved["samples"] and saved["samples"][0]["prompt"] == config.eval.sample_prompts[0]
    steps = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [4, 8]  # checkpoint_every=4, keep 2
    metrics = read_metrics(run_dir)
    assert [m["step"] for m in metrics if "loss" in m] == list(range(1, config.train.steps + 1))


def test_resume_reproduces_the_uninterrupted_run(finished_run, tmp_path):
    config, run_dir, summary = finished_run
    # A run that stopped right after its step-4 checkpoint: drop everything later.
    partial = tmp_path / "partial"
    shutil.copytree(run_dir, partial)
    shutil.rmtree(partial / "checkpoints" / "8")
    rows = [m for m in read_metrics(partial) if m["step"] <= 6]  # rows past the checkpoint get truncated
    (partial / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (partial / "summary.json").unlink()
    resumed = train(config, run_dir=partial, resume=True, show_progress=False)
    assert resumed["resumed_from"] == 4
    full_losses = [(m["step"], m["loss"]) for m in read_metrics(run_dir) if "loss" in m]
    resumed_losses = [(m["step"], m["loss"]) for m in read_metrics(partial) if "loss" in m]
    assert resumed_losses == full_losses
    assert resumed["val_loss"] == summary["val_loss"]
    for a, b in zip(_params(run_dir), _params(partial)):
        np.testing.assert_array_equal(a, b)


def test_two_runs_are_identical(finished_run, tmp_path):
    config, run_dir, summary = finished_run
    again = train(config, run_dir=tmp_path / "again", show_progress=False)
    assert again["val_loss"] == summary["val_loss"]
    assert [m.get("loss") for m in read_metrics(run_dir)] == [m.get("loss") for m in read_metrics(tmp_path / "again")]


def test_load_restores_a_model_that_reproduces_the_validation_loss(finished_run):
    from lmx.data import prepare_data
    from lmx.train.loss import loss_sums

    config, run_dir, summary = finished_run
    run = lmx.load(run_dir)
    assert run.step == config.train.steps
    assert run.tokenizer.fingerprint == summary["tokenizer_fingerprint"]
    data = prepare_data(config)
    nll = tokens = 0.0
    for batch in data.valid_batches(config.train.eval_batches):
        sums = loss_sums(run.model(batch["inputs"]), batch["targets"], batch["loss_mask"])
        nll, tokens = nll + float(sums["nll"]), tokens + float(sums["tokens"])
    assert nll / tokens == pytest.approx(summary["val_loss"], rel=1e-5)
    first = lmx.load(run_dir, step=4)
    assert first.step == 4


def test_load_missing_step_is_a_checkpoint_error(finished_run):
    _, run_dir, _ = finished_run
    with pytest.raises(CheckpointError, match="step 3"):
        lmx.load(run_dir, step=3)


def test_resume_refuses_a_different_tokenizer(finished_run, tmp_path):
    config, run_dir, _ = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    other = config.replace(**{"data.tokenizer_train_bytes": 150_000})  # a different BPE
    (copy / "config.json").write_text(other.to_json())
    with pytest.raises(CheckpointError, match="tokenizer fingerprint"):
        train(other, run_dir=copy, resume=True, show_progress=False)


def test_load_falls_back_to_this_machines_devices(finished_run, tmp_path):
    _, run_dir, _ = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    saved = json.loads((copy / "config.json").read_text())
    saved["mesh"]["shape"] = {"fsdp": 4}  # as if trained on 4 devices; this process has one
    (copy / "config.json").write_text(json.dumps(saved))
    for a, b in zip(_params(run_dir), _params(copy), strict=True):
        np.testing.assert_array_equal(a, b)
