import json

import numpy as np
import pytest

from lmx.config import DataConfig
from lmx.data import make_train_iterator, valid_batches
from lmx.errors import ConfigError

EOS, PAD = 0, 1
SEQ = 4


def stream(n_windows: int) -> np.ndarray:
    """A token stream whose window i starts with token 1000 + i (so rows identify windows)."""
    tokens = np.arange(n_windows * SEQ + 1, dtype=np.int64) % 97 + 2
    tokens[3::7] = EOS
    tokens[::SEQ] = 1000 + np.arange(n_windows + 1)
    return tokens.astype(np.uint16)


def window_ids(batch) -> list[int]:
    return (batch["inputs"][:, 0] - 1000).tolist()


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def config(batch_size=4, **kw):
    return DataConfig(seq_len=SEQ, batch_size=batch_size, **kw)


def make(tokens, seed=0, cfg=None, **kw):
    return make_train_iterator(tokens, cfg or config(), seed, eos_id=EOS, pad_id=PAD, **kw)


def test_batches_have_the_documented_layout():
    batch = next(make(stream(12)))
    assert set(batch) == {"inputs", "targets", "loss_mask", "segment_ids", "positions"}
    assert all(v.shape == (4, SEQ) for v in batch.values())
    assert batch["inputs"].dtype == np.int32 and batch["loss_mask"].dtype == np.float32


def test_each_epoch_is_a_permutation_of_all_windows():
    ids = sum((window_ids(b) for b in take(make(stream(12)), 6)), [])
    assert sorted(ids[:12]) == list(range(12)) and sorted(ids[12:]) == list(range(12))
    assert ids[:12] != ids[12:]  # reshuffled every epoch
    assert ids[:12] != list(range(12))


def test_same_seed_same_batches_different_seed_different_batches():
    tokens = stream(40)
    a = [window_ids(b) for b in take(make(tokens, seed=3), 10)]
    assert a == [window_ids(b) for b in take(make(tokens, seed=3), 10)]
    assert a != [window_ids(b) for b in take(make(tokens, seed=4), 10)]
    assert a != [window_ids(b) for b in take(make(tokens, seed=3, cfg=config(shuffle_seed=1)), 10)]


@pytest.mark.parametrize("consumed", [0, 1, 2, 5])
def test_resume_from_state_continues_exactly(consumed):
    tokens = stream(10)  # 10 windows, batch 4: epochs end inside batches 3, 5, 8, ...
    original = make(tokens, seed=7)
    take(original, consumed)
    state = json.loads(json.dumps(original.get_state()))
    expected = take(original, 6)
    resumed = make(tokens, seed=7)
    resumed.set_state(state)
    for want, got in zip(expected, take(resumed, 6), strict=True):
        assert all(np.array_equal(want[k], got[k]) for k in want)


def test_processes_split_every_global_batch():
    tokens = stream(24)
    global_batches = take(make(tokens, seed=1, cfg=config(batch_size=6)), 8)
    parts = [
        take(make(tokens, seed=1, cfg=config(batch_size=6), process_index=p, process_count=3), 8)
        for p in range(3)
    ]
    for step, full in enumerate(global_batches):
        local = [window_ids(parts[p][step]) for p in range(3)]
        assert all(len(ids) == 2 for ids in local)
        flat = sum(local, [])
        # process p holds the contiguous block [2p, 2p + 2) of the global batch, in order
        assert flat == window_ids(full)


def test_bad_process_layout_is_a_config_error():
    with pytest.raises(ConfigError, match="data.batch_size"):
        make(stream(8), process_count=3)
    with pytest.raises(ConfigError, match="process_index"):
        make(stream(8), process_index=2, process_count=2)


def test_valid_batches_are_the_first_windows_in_order():
    tokens = stream(10)
    batches = valid_batches(tokens, config(), 2, eos_id=EOS, pad_id=PAD)
    assert [window_ids(b) for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    again = valid_batches(tokens, config(), 2, eos_id=EOS, pad_id=PAD)
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(batches, again, strict=True) for k in a)
    halves = [valid_batches(tokens, config(), 2, p, 2, eos_id=EOS, pad_id=PAD) for p in range(2)]
    assert [window_ids(b) for b in halves[0]] == [[0, 1], [4, 5]]  # contiguous blocks
    assert [window_ids(b) for b in halves[1]] == [[2, 3], [6, 7]]


def test_valid_batches_pad_when_windows_run_out():
    batches = valid_batches(stream(5), config(), 4, eos_id=EOS, pad_id=PAD)
    assert len(batches) == 2
    last = batches[-1]
    assert last["loss_mask"][:1].all() and not last["loss_mask"][1:].any()
    assert (last["inputs"][1:] == PAD).all() and not last["segment_ids"][1:].any()
    short = valid_batches(np.array([5, 6, EOS], np.uint16), config(), 3, eos_id=EOS, pad_id=PAD)
    assert len(short) == 1 and short[0]["loss_mask"].sum() == 2
