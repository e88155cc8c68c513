"""Decode-shaped matmul throughput against the size of the weights a step reads: where caches stop.

    python benchmarks/matmul_working_set.py [--rows 8] [--layers 1 2 4 5 6 7 8 12] [--dtype float32 bfloat16]
                                            [--out benchmarks/results/matmul_working_set.json]

A decode step multiplies `rows` activations (the batch) by every weight matrix once. This runs the
FFN of the decode benchmark's model (d_model 256, d_ff 704, gate/up/down) for `layers` layers inside
one compiled `fori_loop` of 200 steps, `x <- x + ((x W_g) * (x W_u)) W_d`, so each step reads all the
weights once, as a decode step does. The weights total 3 * 256 * 704 * layers values (2.16 MB per
layer in float32). The report is GFLOP/s per weight size: as long as the weights stay in the CPU's
caches the throughput is the matmul kernel's; past the usable cache it falls to what memory
bandwidth allows (4 bytes per weight per step in float32, shared by `rows` rows).

`--dtype bfloat16` stores the weights in bfloat16 and multiplies bfloat16 operands with float32 sums
(`lmx.nn.precision.einsum`), halving the bytes per step. Each point is the best of 7 runs, in a fresh
process per point so that one point's cache state does not carry into the next.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
D_MODEL, D_FF, STEPS = 256, 704, 200


def one_point(rows: int, layers: int, dtype: str) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from lmx.nn.precision import einsum

    cdt = jnp.dtype(dtype)
    rng = np.random.default_rng(0)
    shapes = [(D_MODEL, D_FF), (D_MODEL, D_FF), (D_FF, D_MODEL)]
    weights = [tuple(jnp.asarray(rng.normal(0, 0.05, s).astype(np.float32), cdt) for s in shapes)
               for _ in range(layers)]
    x = jnp.asarray(rng.normal(size=(rows, D_MODEL)).astype(np.float32))

    @jax.jit
    def run(x, weights):
        def step(_, x):
            for g, u, d in weights:
                h = einsum("bd,df->bf", x, g, cdt) * einsum("bd,df->bf", x, u, cdt)
                x = x + 1e-2 * einsum("bf,fd->bd", h, d, cdt).astype(jnp.float32)
            return x
        return jax.lax.fori_loop(0, STEPS, step, x)

    run(x, weights).block_until_ready()
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        run(x, weights).block_until_ready()
        times.append(time.perf_counter() - t0)
    best = min(times)
    n_weights = 3 * D_MODEL * D_FF * layers
    return {"rows": rows, "layers": layers, "dtype": dtype, "weight_mb": n_weights * cdt.itemsize / 1e6,
            "us_per_step": best / STEPS * 1e6, "gflops": 2 * rows * n_weights * STEPS / best / 1e9,
            "weight_gb_per_s": n_weights * cdt.itemsize * STEPS / best / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[8])
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2, 4, 5, 6, 7, 8, 12])
    parser.add_argument("--dtype", nargs="+", choices=["float32", "bfloat16"], default=["float32", "bfloat16"])
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/matmul_working_set.json"))
    parser.add_argument("--point", help=argparse.SUPPRESS)  # rows,layers,dtype: run one point (child process)
    args = parser.parse_args()
    if args.point:
        rows, layers, dtype = args.point.split(",")
        print(json.dumps(one_point(int(rows), int(layers), dtype)))
        return

    import jax

    points = []
    print(f"{'dtype':>9} {'rows':>4} {'weights MB':>10} {'us/step':>8} {'GFLOP/s':>8} {'weight GB/s':>11}")
    for dtype in args.dtype:
        for rows in args.rows:
            for layers in args.layers:
                out = subprocess.run([sys.executable, __file__, "--point", f"{rows},{layers},{dtype}"],
                                     capture_output=True, text=True, check=True)
                p = json.loads(out.stdout.strip().splitlines()[-1])
                points.append(p)
                print(f"{dtype:>9} {rows:>4} {p['weight_mb']:>10.1f} {p['us_per_step']:>8.0f} {p['gflops']:>8.1f} "
                      f"{p['weight_gb_per_s']:>11.1f}")
    result = {"what": "decode-shaped FFN matmuls in a compiled loop: throughput against weight bytes per step",
              "jax": jax.__version__, "backend": jax.default_backend(), "points": points}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
