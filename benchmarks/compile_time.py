"""Compile time of the train step at 2 and at 24 layers (scanned layers: goal ratio <= 1.3).

    python benchmarks/compile_time.py [--repeats 3] [--unrolled]

Tiny width (d_model 32, seq 32, batch 4) so that compile time, not the model, dominates. Each size
is lowered and compiled `repeats` times (`jax.jit(...).lower(...).compile()`, the persistent
compilation cache off) and the minimum is kept; a 1-layer warm-up compile runs first.
`--unrolled` also measures the 24-layer model with model.scan_layers=false for contrast.
Writes benchmarks/results/compile_time.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_enable_compilation_cache", False)

from lmx.config import load_config  # noqa: E402
from lmx.train.loop import build_trainer  # noqa: E402


def compile_seconds(n_layers: int, scan: bool, repeats: int) -> float:
    config = load_config("tiny", [f"model.n_layers={n_layers}", f"model.scan_layers={str(scan).lower()}"])
    trainer = build_trainer(config, np.ones(config.model.vocab_size, np.int32))
    state = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                         trainer.abstract_state, trainer.state_shardings)
    b, length = config.data.batch_size, config.data.seq_len
    batch = {k: jax.ShapeDtypeStruct((b, length), dt, sharding=trainer.batch_sharding) for k, dt in
             [("inputs", np.int32), ("targets", np.int32), ("loss_mask", np.float32),
              ("segment_ids", np.int32), ("positions", np.int32)]}
    times = []
    for _ in range(repeats):
        jax.clear_caches()
        t0 = time.perf_counter()
        trainer.train_step.lower(state, batch).compile()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--unrolled", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/compile_time.json"))
    args = parser.parse_args()
    compile_seconds(1, True, 1)  # warm-up: imports, first-time XLA initialisation
    result = {"layers_2_seconds": compile_seconds(2, True, args.repeats),
              "layers_24_seconds": compile_seconds(24, True, args.repeats)}
    result["ratio_24_over_2"] = result["layers_24_seconds"] / result["layers_2_seconds"]
    result["goal_ratio_max"] = 1.3
    result["meets_goal"] = result["ratio_24_over_2"] <= 1.3
    if args.unrolled:
        result["layers_24_unrolled_seconds"] = compile_seconds(24, False, 1)
    result.update({"what": "min over repeats of train_step.lower(...).compile(), tiny width, scan_layers=true",
                   "repeats": args.repeats, "backend": jax.default_backend(), "devices": jax.device_count(),
                   "jax": jax.__version__, "machine": platform.machine(), "cpu_count": __import__("os").cpu_count()})
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
