"""Checkpoint integrity: damaged newest step falls back, partial steps are invisible, failed saves stop cleanly."""

import shutil

import pytest

import lmx
from lmx.errors import CheckpointError
from lmx.train.loop import train


@pytest.fixture(scope="module")
def run_dir(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "run"
    train(tiny, run_dir=path, show_progress=False)  # checkpoints at steps 4 and 8
    return path


def _damage(step_dir):
    damaged = 0
    for item in sorted(step_dir.rglob("*")):
        if item.is_file() and item.parent.name != "meta" and item.stat().st_size > 16:
            item.write_bytes(item.read_bytes()[:8])  # truncate
            damaged += 1
    assert damaged


def test_truncated_newest_checkpoint_falls_back_to_the_previous_step(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    _damage(copy / "checkpoints" / "8")
    with pytest.warns(UserWarning, match="step 8"):
        restored = lmx.load(copy)
    assert restored.step == 4


def test_every_checkpoint_damaged_is_a_clear_error(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    for step in ("4", "8"):
        _damage(copy / "checkpoints" / step)
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        lmx.load(copy)


def test_partial_checkpoint_is_never_loaded(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    # What an interrupted save leaves behind: Orbax's temporary directory, never finalised.
    shutil.copytree(copy / "checkpoints" / "8", copy / "checkpoints" / "12.orbax-checkpoint-tmp-1234")
    assert lmx.load(copy).step == 8


def test_failed_save_stops_with_a_message_and_keeps_earlier_checkpoints(tiny, tmp_path, monkeypatch):
    from lmx.train import checkpoint

    original = checkpoint.Checkpointer.save

    def save(self, step, *args):
        if step == 8:
            raise OSError(28, "No space left on device")
        return original(self, step, *args)

    monkeypatch.setattr(checkpoint.Checkpointer, "save", save)
    run = tmp_path / "run"
    with pytest.raises(CheckpointError, match="step 8.*No space left on device.*earlier checkpoints are intact"):
        train(tiny, run_dir=run, show_progress=False)
    monkeypatch.undo()
    assert lmx.load(run).step == 4


def test_restore_checks_the_tree_against_the_model(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    other = lmx.load(run_dir).config.replace(**{"model.n_layers": 3})
    (copy / "config.json").write_text(other.to_json())
    with pytest.raises(CheckpointError):
        lmx.load(copy)


def test_params_only_restore_equals_the_full_restore(run_dir):
    import jax
    import numpy as np

    from lmx.api import config_for_these_devices
    from lmx.tokenizers import Tokenizer
    from lmx.train.checkpoint import Checkpointer, abstract_with_shardings
    from lmx.train.loop import build_trainer

    run = lmx.load(run_dir)  # the params-only path
    tokenizer = Tokenizer.load(run_dir / "tokenizer")
    trainer = build_trainer(config_for_these_devices(run.config), tokenizer.token_bytes,
                            token_chars=tokenizer.token_chars)
    checkpointer = Checkpointer(run_dir / "checkpoints", async_save=False)
    try:
        step, state, _, _ = checkpointer.restore(abstract_with_shardings(trainer.abstract_state,
                                                                         trainer.state_shardings))
    finally:
        checkpointer.close()
    from flax import nnx

    full = jax.tree.leaves(nnx.state(nnx.merge(trainer.graphdef, state["params"]), nnx.Param))
    ours = jax.tree.leaves(nnx.state(run.model, nnx.Param))
    assert step == run.step == 8 and len(full) == len(ours) > 0
    for a, b in zip(full, ours):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
