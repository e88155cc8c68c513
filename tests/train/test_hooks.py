"""Hooks run at their period with the state of their step; the typed train state round-trips
through a checkpoint bit-exactly."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

import lmx
from lmx.train.checkpoint import Checkpointer, abstract_with_shardings
from lmx.train.hooks import Hook, hook
from lmx.train.loop import build_trainer, train
from lmx.train.metrics import read_metrics
from lmx.train.state import TrainState


class RecordEveryThird(Hook):
    every = 3

    def __init__(self):
        self.seen = []

    def __call__(self, loop, event):
        # copy what is kept: the next train step donates the state's buffers
        self.seen.append({"step": event.step, "state_step": int(event.state.step), "last": event.last,
                          "loss": float(event.metrics["loss"]),
                          "params": [np.asarray(x) for x in jax.tree.leaves(event.state.params)]})

    def end(self, loop, state):
        self.end_step = int(state.step)
        self.end_eval = loop.eval_result


def test_a_user_hook_runs_at_its_period_with_the_state_of_its_step(tiny, tmp_path):
    config = tiny.replace(**{"train.steps": 8, "train.log_every": 1, "train.checkpoint_every": 3,
                             "train.keep_checkpoints": 3})
    recorder = RecordEveryThird()

    @hook(every=4, at_last=True)
    def param_norm(loop, event):
        norm = float(np.sqrt(sum(np.sum(np.square(np.asarray(x))) for x in jax.tree.leaves(event.state.params))))
        loop.log(event.step, {"param_norm": norm, "state_step": int(event.state.step)})

    run_dir = tmp_path / "run"
    summary = train(config, run_dir=run_dir, show_progress=False, hooks=[recorder, param_norm])
    assert summary["status"] == "completed" and summary["steps"] == 8

    assert [s["step"] for s in recorder.seen] == [3, 6]  # not at the last step: at_last is False
    assert all(s["state_step"] == s["step"] and not s["last"] for s in recorder.seen)
    losses = {row["step"]: row["loss"] for row in read_metrics(run_dir) if "loss" in row}
    assert [s["loss"] for s in recorder.seen] == [losses[3], losses[6]]
    assert recorder.end_step == 8 and recorder.end_eval["loss"] == summary["val_loss"]

    # the function hook's rows: at its period and at the last step (steps 4 and 8), after the built-in rows
    rows = read_metrics(run_dir)
    custom = [row for row in rows if "param_norm" in row]
    assert [(row["step"], row["state_step"]) for row in custom] == [(4, 4), (8, 8)]
    assert rows.index(custom[-1]) == len(rows) - 1

    # the state a hook sees is the state after its step: the parameters it saw at steps 3 and 6 are
    # bit-identical to the checkpoints of those steps
    for seen in recorder.seen:
        saved = jax.tree.leaves(nnx.state(lmx.load(run_dir, step=seen["step"]).model))
        assert len(saved) == len(seen["params"])
        for a, b in zip(seen["params"], saved):
            np.testing.assert_array_equal(a, np.asarray(b))


def test_function_hook_rejects_a_zero_period():
    with pytest.raises(ValueError, match="every must be >= 1"):
        hook(every=0)(lambda loop, event: None)


def _batch(config, seed):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, config.model.vocab_size, size=(config.data.batch_size, config.data.seq_len + 1))
    shape = (config.data.batch_size, config.data.seq_len)
    return {"inputs": tokens[:, :-1].astype(np.int32), "targets": tokens[:, 1:].astype(np.int32),
            "loss_mask": np.ones(shape, np.float32), "segment_ids": np.ones(shape, np.int32),
            "positions": np.broadcast_to(np.arange(shape[1], dtype=np.int32), shape)}


def _leaves_equal(a, b):
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


def test_train_state_round_trips_through_a_checkpoint_bit_exactly(tiny, tmp_path):
    trainer = build_trainer(tiny, np.ones(tiny.model.vocab_size, np.int32))
    state = trainer.init_state()
    for seed in range(3):  # non-trivial optimizer moments, step and RNG
        state, _ = trainer.train_step(state, _batch(tiny, seed))
    assert isinstance(state, TrainState)
    saved = jax.device_get(state)

    abstract = abstract_with_shardings(trainer.abstract_state, trainer.state_shardings)
    checkpointer = Checkpointer(tmp_path / "ckpt", async_save=False)
    try:
        checkpointer.save(3, state, {"position": 3}, {"step": 3})
        checkpointer.wait()
        step, restored, data_state, meta = checkpointer.restore(abstract)
        params_step, params, _ = checkpointer.restore_params(abstract.params)
    finally:
        checkpointer.close()
    assert (step, params_step, data_state, meta) == (3, 3, {"position": 3}, {"step": 3})
    assert isinstance(restored, TrainState) and int(restored.step) == 3
    _leaves_equal(saved, jax.device_get(restored))
    _leaves_equal(saved.params, jax.device_get(params))
    for leaf, sharding in zip(jax.tree.leaves(restored), jax.tree.leaves(trainer.state_shardings)):
        assert leaf.sharding == sharding

    # a checkpoint of the former dict state ({"params", "opt_state", ...}) restores into a TrainState
    old = Checkpointer(tmp_path / "dict", async_save=False)
    try:
        old.save(3, {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}, {}, {})
        old.wait()
        _, from_dict, _, _ = old.restore(abstract)
    finally:
        old.close()
    assert isinstance(from_dict, TrainState)
    _leaves_equal(saved, jax.device_get(from_dict))

    # the restored state trains on exactly like the saved one
    batch = _batch(tiny, 9)
    a, metrics_a = trainer.train_step(jax.device_put(saved, trainer.state_shardings), batch)
    b, metrics_b = trainer.train_step(restored, batch)
    assert float(metrics_a["loss"]) == float(metrics_b["loss"])
    _leaves_equal(jax.device_get(a), jax.device_get(b))
