"""What checkpoint checksums cost: restore time with and without verification, small and larger model.

    python benchmarks/checkpoint_verify.py [--repeats 5]

For each model a train state (parameters, AdamW moments, step, RNG) with every float array filled
with random normals (so that, like a trained state, it does not compress away; zero moments would)
is saved once with `lmx.train.checkpoint.Checkpointer` (synchronous). Then, alternating, `repeats` times each:

- plain restore: Orbax's own restore of the same items (`state`, `data`, `meta`), no verification;
- verified restore: `Checkpointer.restore` (also reads `integrity`, checks the tree metadata and
  recomputes every array's checksum, lmx.train.integrity), what `lmx train --resume` runs;
- the same two for the parameters alone (`Checkpointer.restore_params`, what `lmx.load`, `lmx eval`
  and `lmx generate` run).

Medians are reported. The files sit in the page cache after the first read, so these are the CPU
costs; reading from a cold disk makes the ratio smaller. Also reported: computing the checksums at
save time (`tree_checksums` of the whole state) and the synchronous save itself.
Writes benchmarks/results/checkpoint_verify.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402

from lmx.config import load_config  # noqa: E402
from lmx.nn import param_count  # noqa: E402
from lmx.train.checkpoint import Checkpointer, abstract_with_shardings  # noqa: E402
from lmx.train.integrity import tree_checksums  # noqa: E402
from lmx.train.loop import build_trainer  # noqa: E402

MODELS = {
    "small (configs/tiny.py)": [],
    "larger (d_model 512, 8 layers, vocab 8192)": ["model.d_model=512", "model.n_layers=8", "model.n_heads=8",
                                                   "model.n_kv_heads=8", "model.vocab_size=8192",
                                                   "model.max_seq_len=64"],
}


def _seconds(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def measure(overrides: list[str], repeats: int) -> dict:
    config = load_config("tiny", overrides)
    trainer = build_trainer(config, np.ones(config.model.vocab_size, np.int32))
    state = trainer.init_state()
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(0), len(leaves))
    state = jax.tree.unflatten(treedef, [
        jax.random.normal(key, x.shape, x.dtype) if jax.numpy.issubdtype(x.dtype, jax.numpy.floating) else x
        for key, x in zip(keys, leaves)])
    abstract = abstract_with_shardings(trainer.abstract_state, trainer.state_shardings)
    state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "checkpoints"
        writer = Checkpointer(directory, async_save=False)
        tree_checksums(state)  # compile the checksum function once
        checksum = statistics.median(_seconds(lambda: tree_checksums(state)) for _ in range(repeats))
        start = time.perf_counter()
        writer.save(1, state, {"global_example_index": 0, "global_batch_size": config.data.batch_size}, {})
        writer.close()
        save = time.perf_counter() - start
        reader = Checkpointer(directory, async_save=False, writer=False)

        def plain():
            return reader.manager.restore(1, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))["state"]

        def verified():
            return reader.restore(abstract, step=1)[1]

        def params_plain():
            target = {"params": abstract.params}
            restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), target)
            with ocp.CheckpointManager(directory, item_handlers={"state": ocp.PyTreeCheckpointHandler()},
                                       options=ocp.CheckpointManagerOptions(create=False)) as manager:
                return manager.restore(1, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
                    item=target, restore_args=restore_args, partial_restore=True)))["state"]

        def params_verified():
            return reader.restore_params(abstract.params, step=1)[1]

        timings = {name: [] for name in ("plain", "verified", "params_plain", "params_verified")}
        functions = {"plain": plain, "verified": verified, "params_plain": params_plain,
                     "params_verified": params_verified}
        for fn in functions.values():
            _seconds(fn)  # warm-up: compilation, first read into the page cache
        for _ in range(repeats):
            for name, fn in functions.items():
                timings[name].append(_seconds(fn))
        reader.close()
    median = {name: statistics.median(values) for name, values in timings.items()}
    return {
        "params": param_count(config.model),
        "state_mib": state_bytes / 2**20,
        "restore_seconds": median["plain"],
        "restore_verified_seconds": median["verified"],
        "restore_ratio": median["verified"] / median["plain"],
        "params_restore_seconds": median["params_plain"],
        "params_restore_verified_seconds": median["params_verified"],
        "params_restore_ratio": median["params_verified"] / median["params_plain"],
        "checksums_at_save_seconds": checksum,
        "save_seconds": save,
        "overrides": overrides,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/checkpoint_verify.json"))
    args = parser.parse_args()
    result = {name: measure(overrides, args.repeats) for name, overrides in MODELS.items()}
    result["about"] = {"what": "median of `repeats` restores of the whole train state and of the params alone, "
                               "Orbax plain vs lmx Checkpointer (checksums verified); files in the page cache",
                       "repeats": args.repeats, "backend": jax.default_backend(), "devices": jax.device_count(),
                       "jax": jax.__version__, "orbax": ocp.__version__, "machine": platform.machine(),
                       "cpu_count": os.cpu_count(), "load_average": os.getloadavg()[0]}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
