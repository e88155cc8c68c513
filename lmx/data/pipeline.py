"""Grain input pipelines over packed windows: an endless shuffled training iterator and fixed validation batches.

Process p of P sees the contiguous rows [p * b, (p + 1) * b) of every global batch (b = batch_size // P),
which is exactly the block of the batch its devices hold under `jax.make_array_from_process_local_data`,
so the assembled global batch equals the one a single process would build. The training iterator's
`get_state()` is a small JSON-serialisable dict; `set_state` on a freshly built iterator (same data,
config, seed and process) continues with exactly the batches the original would have produced.

The global batch g is the shuffled windows [g * batch_size, (g + 1) * batch_size) whatever the process
count, so a checkpoint stores the data position as a global example index (`data_position`) and
`iterator_state_at` splits it again for the processes that resume, however many they are.
"""

from __future__ import annotations

import hashlib
import math

import grain
import numpy as np

from lmx.config import DataConfig
from lmx.data.objectives import example_rng
from lmx.data.windows import EXAMPLE_KEYS, PackedWindows
from lmx.errors import CheckpointError, ConfigError


def local_batch_size(data_config: DataConfig, process_index: int, process_count: int) -> int:
    """`batch_size // process_count`; ConfigError unless it divides evenly and the index is in range."""
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ConfigError(f"process_index: {process_index} is not in [0, {process_count})")
    if data_config.batch_size % process_count:
        raise ConfigError(
            f"data.batch_size: global batch {data_config.batch_size} is not divisible by {process_count} processes"
        )
    return data_config.batch_size // process_count


def shuffle_seed(data_config: DataConfig, seed: int) -> int:
    """32-bit shuffle seed derived from data.shuffle_seed and the run seed (both change the order)."""
    digest = hashlib.sha256(f"lmx-shuffle:{data_config.shuffle_seed}:{seed}".encode()).hexdigest()
    return int(digest[:8], 16)


def make_train_iterator(
    tokens: np.ndarray,
    data_config: DataConfig,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    *,
    eos_id: int,
    pad_id: int,
    objective=None,
) -> grain.DatasetIterator:
    """Endless iterator of local batches {key: array [batch_size // process_count, ...]}.

    Windows are shuffled globally with a seeded permutation that changes every epoch, epochs follow
    each other seamlessly (a global batch may straddle two), and incomplete batches never occur.
    `objective` (lmx.data.objectives.make_objective) turns each window into the arrays its
    architecture trains on, with an RNG derived from the seed and the example's global index, so
    a resumed iterator produces the same corrupted examples.
    """
    local = local_batch_size(data_config, process_index, process_count)
    source = PackedWindows(tokens, data_config.seq_len, eos_id, pad_id)
    dataset = grain.MapDataset.source(source).shuffle(seed=shuffle_seed(data_config, seed)).repeat(None)
    if objective is not None:
        dataset = dataset.random_map(objective, seed=shuffle_seed(data_config, seed + 1))
    dataset = dataset.batch(local, drop_remainder=True)[process_index::process_count]
    read_options = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)  # in-process, no threads
    return iter(dataset.to_iter_dataset(read_options))


def valid_batches(
    tokens: np.ndarray,
    data_config: DataConfig,
    n_batches: int,
    process_index: int = 0,
    process_count: int = 1,
    *,
    eos_id: int,
    pad_id: int,
    objective=None,
) -> list[dict[str, np.ndarray]]:
    """The first n_batches global batches of windows in stream order (fewer if the split is short, never 0).

    The last batch is filled with all-padding rows (loss_mask 0) when windows run out. `objective`
    is applied to row r with `example_rng(0, r)`, so validation batches are fixed.
    """
    if n_batches < 1:
        raise ConfigError(f"train.eval_batches: must be positive, got {n_batches}")
    local = local_batch_size(data_config, process_index, process_count)
    source = PackedWindows(tokens, data_config.seq_len, eos_id, pad_id)
    global_batch = data_config.batch_size
    count = min(n_batches, math.ceil(len(source) / global_batch))
    batches = []
    for b in range(count):
        rows = [b * global_batch + process_index * local + k for k in range(local)]
        examples = [source[r] if r < len(source) else source.padding_example() for r in rows]
        if objective is not None:
            examples = [objective(ex, example_rng(0, r)) for ex, r in zip(examples, rows)]
        keys = EXAMPLE_KEYS if objective is None else list(examples[0])
        batches.append({key: np.stack([ex[key] for ex in examples]) for key in keys})
    return batches


def data_position(iterator_state: dict, data_config: DataConfig) -> dict:
    """What a checkpoint stores of a training iterator's state: the global example index (windows of the
    shuffled stream consumed by every process together) and the global batch size. The same on every
    process: each one's iterator has taken the same number of global batches."""
    batches = int(iterator_state["next_index"])
    return {"global_example_index": batches * data_config.batch_size, "global_batch_size": data_config.batch_size}


def iterator_state_at(position: dict, data_config: DataConfig) -> dict:
    """The `set_state` argument that continues a fresh iterator (any process of any process count)
    at the saved `data_position` (or the bare iterator state of checkpoints written before it)."""
    if "global_example_index" not in position:
        return {"next_index": int(position["next_index"])}  # one global batch per iterator step, as now
    index = int(position["global_example_index"])
    if index % data_config.batch_size:
        raise CheckpointError(
            f"data.batch_size: the checkpoint's data position {index} (saved with global batch "
            f"{position.get('global_batch_size')}) is not a whole number of batches of {data_config.batch_size}")
    return {"next_index": index // data_config.batch_size}
