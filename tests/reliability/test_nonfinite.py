"""Non-finite values: `halt` names the step, batch and first non-finite tensor; `skip` drops and counts."""

import numpy as np
import pytest

from lmx.errors import NonFiniteError
from lmx.train.loop import train
from lmx.train.metrics import read_metrics


@pytest.fixture
def poison_batch(monkeypatch):
    """Make the batch with index 2 (the third) carry a NaN loss mask."""
    from lmx.data import prepare

    original = prepare.PreparedData.train_iterator

    def train_iterator(self, *args, **kwargs):
        iterator = original(self, *args, **kwargs)

        class Poisoned:
            count = 0

            def __next__(self_inner):
                batch = dict(next(iterator))
                if Poisoned.count == 2:
                    batch["loss_mask"] = np.full_like(batch["loss_mask"], np.nan)
                Poisoned.count += 1
                return batch

            def get_state(self_inner):
                return iterator.get_state()

            def set_state(self_inner, state):
                iterator.set_state(state)

        return Poisoned()

    monkeypatch.setattr(prepare.PreparedData, "train_iterator", train_iterator)


def test_halt_names_step_batch_and_tensor(tiny, tmp_path, poison_batch):
    with pytest.raises(NonFiniteError) as info:
        train(tiny, run_dir=tmp_path / "run", show_progress=False)
    message = str(info.value)
    assert "step 3" in message and "batch index 2" in message
    assert "first non-finite tensor: batch['loss_mask']" in message
    assert "last good checkpoint: none" in message


def test_skip_drops_the_step_counts_it_and_continues(tiny, tmp_path, poison_batch):
    config = tiny.replace(**{"train.nonfinite": "skip", "train.log_every": 1})
    summary = train(config, run_dir=tmp_path / "run", show_progress=False)
    assert summary["skipped_steps"] == 1
    assert summary["status"] == "completed" and np.isfinite(summary["val_loss"])
    rows = {row["step"]: row for row in read_metrics(tmp_path / "run") if "loss" in row}
    assert rows[3]["skipped"] == 1 and rows[2]["skipped"] == 0


def test_absurd_learning_rate_halts_with_a_named_tensor(tiny, tmp_path):
    config = tiny.replace(**{"optim.lr": 1e35, "optim.clip_norm": 0.0, "optim.warmup_steps": 0})
    with pytest.raises(NonFiniteError) as info:
        train(config, run_dir=tmp_path / "run", show_progress=False)
    message = str(info.value)
    assert "first non-finite tensor:" in message
    named = message.split("first non-finite tensor:")[1].split(";")[0].strip()
    assert named.startswith(("parameter", "logits", "loss", "gradient")), named
