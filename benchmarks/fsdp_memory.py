"""Per-device parameter + optimizer-state bytes under FSDP on 8 forced host devices vs one device.

    python benchmarks/fsdp_memory.py

Measured from the arrays themselves: the bytes of every addressable shard of the initialised train
state, summed per device (goal: about 1/8 of the one-device bytes). Sets
XLA_FLAGS=--xla_force_host_platform_device_count=8 before importing jax. Writes
benchmarks/results/fsdp_memory.json.
"""

from __future__ import annotations

import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import json  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from lmx.config import MeshConfig, load_config  # noqa: E402
from lmx.parallel import make_mesh  # noqa: E402
from lmx.train.loop import build_trainer  # noqa: E402


def bytes_per_device(tree) -> dict:
    out = defaultdict(int)
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            out[shard.device.id] += shard.data.nbytes
    return dict(out)


def measure(config, mesh) -> dict:
    trainer = build_trainer(config, np.ones(config.model.vocab_size, np.int32), mesh=mesh)
    state = trainer.init_state()
    params, opt = bytes_per_device(state.params), bytes_per_device(state.opt_state)
    total = {d: params.get(d, 0) + opt.get(d, 0) for d in set(params) | set(opt)}
    return {"devices": len(total), "params_max": max(params.values()), "opt_state_max": max(opt.values()),
            "total_max": max(total.values()), "total_min": min(total.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/fsdp_memory.json"))
    args = parser.parse_args()
    assert jax.device_count() == 8, jax.device_count()
    config = load_config("tiny", ["model.d_model=64", "model.n_heads=4", "model.n_kv_heads=2",
                                  "data.batch_size=8", "mesh.strategy=fsdp", 'mesh.shape={"fsdp": -1}'])
    single = measure(config, make_mesh(MeshConfig(shape={"fsdp": 1}), devices=jax.devices()[:1]))
    fsdp = measure(config, make_mesh(MeshConfig(shape={"fsdp": 8})))
    result = {
        "model": {"d_model": 64, "n_layers": config.model.n_layers, "vocab_size": config.model.vocab_size},
        "one_device_bytes": single["total_max"],
        "fsdp8_bytes_per_device_max": fsdp["total_max"],
        "fsdp8_bytes_per_device_min": fsdp["total_min"],
        "fsdp8_params_bytes_per_device": fsdp["params_max"],
        "fsdp8_opt_state_bytes_per_device": fsdp["opt_state_max"],
        "ratio": fsdp["total_max"] / single["total_max"],
        "goal_ratio": 1 / 8,
        "what": "sum of addressable-shard bytes of params + optimizer state, per device, after init_state",
        "backend": jax.default_backend(),
        "jax": jax.__version__,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
