"""Ensemble training against the same trials trained one after another, as a user experiences it.

    python benchmarks/ensemble.py [--members 8] [--steps 100]

Trials: `configs/tiny.py` widened to d_model 64 (2 layers, 4 heads), batch 8 x 64 tokens, `--steps`
steps with an evaluation and a checkpoint every 50 steps, a metrics row every 10 and the greedy sample
at the end (tiny's settings otherwise); member i has train.seed i and a learning rate from a log grid
over [1e-3, 1e-2]. Two fresh processes, one after the other:

- sequential: `lmx.train.loop.train` of each trial in turn (one process, so later runs reuse what
  the first one loaded; a sweep that starts one `lmx train` process per trial also pays the import
  and JAX start-up each time, which is reported separately and not counted);
- ensemble: `lmx.train.ensemble.train_ensemble` of all trials at once.

Counted: wall time from the first `train` / `train_ensemble` call to the last summary, compilation,
data preparation (cache hits: the cache is filled before either side is timed), checkpoints,
evaluations and samples included. Also reported: the steady-state step time (the runs' own
`tokens_per_second`, which leaves out the first step and its compilation) and the members' final
validation losses on both sides (they agree to float rounding). The machine's load average is
recorded at the start and end of each side: the 2-core machine this was written on is shared.
Writes benchmarks/results/ensemble.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROCESS_START = time.monotonic()
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OVERRIDES = ["model.d_model=64", "model.n_heads=4", "model.n_kv_heads=2", "model.n_layers=2",
             "data.batch_size=8", "data.seq_len=64", "train.eval_every=50", "train.checkpoint_every=50",
             "train.log_every=10", "train.eval_batches=2"]


def trial_configs(members: int, steps: int, cache_dir: str):
    from lmx.config import load_config  # imported here: the parent process only launches the two sides

    base = load_config("tiny", [*OVERRIDES, f"train.steps={steps}", f"data.cache_dir={cache_dir}"])
    lrs = [1e-3 * 10 ** (i / max(members - 1, 1)) for i in range(members)]
    return [base.replace(**{"train.seed": i, "optim.lr": lr}) for i, lr in enumerate(lrs)]


def child(mode: str, members: int, steps: int, cache_dir: str, out: str) -> None:
    """One side of the comparison, in this (fresh) process; writes its numbers to `out`."""
    import jax

    from lmx.data import prepare_data
    from lmx.train.ensemble import train_ensemble
    from lmx.train.loop import train

    configs = trial_configs(members, steps, cache_dir)
    prepare_data(configs[0])  # fill the data cache (tokenizer, token arrays): not counted on either side
    startup = time.monotonic() - PROCESS_START
    load_start = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix=f"lmx-ensemble-bench-{mode}-"))
    start = time.monotonic()
    if mode == "sequential":
        summaries = [train(c, run_dir=root / f"trial{i}", show_progress=False) for i, c in enumerate(configs)]
    else:
        summaries = train_ensemble(configs, [root / f"trial{i}" for i in range(len(configs))])
    wall = time.monotonic() - start
    tokens_per_step = configs[0].data.batch_size * configs[0].data.seq_len
    step_seconds = [tokens_per_step / s["tokens_per_second"] for s in summaries]
    result = {
        "mode": mode,
        "wall_seconds": wall,
        "startup_seconds_not_counted": startup,
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "run_wall_seconds": [s["wall_seconds"] for s in summaries],
        # sequential: each run's own steady-state step; ensemble: the one step that trains every member
        "steady_step_seconds": (sum(step_seconds) / len(step_seconds)) if mode == "sequential" else step_seconds[0],
        "val_loss": [s["val_loss"] for s in summaries],
        "final_train_loss": [s["final_train_loss"] for s in summaries],
        "jax_backend": jax.default_backend(),
    }
    Path(out).write_text(json.dumps(result, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "ensemble.json"))
    parser.add_argument("--child", choices=("sequential", "ensemble"), help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.members, args.steps, args.cache_dir, args.out)
        return

    load_start = os.getloadavg()
    cache_dir = tempfile.mkdtemp(prefix="lmx-ensemble-bench-cache-")
    sides = {}
    for mode in ("sequential", "ensemble"):
        out = Path(tempfile.mkdtemp()) / f"{mode}.json"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        subprocess.run([sys.executable, __file__, "--child", mode, "--members", str(args.members),
                        "--steps", str(args.steps), "--cache-dir", cache_dir, "--out", str(out)],
                       check=True, env=env)
        sides[mode] = json.loads(out.read_text())
        print(f"{mode}: {sides[mode]['wall_seconds']:.1f} s", flush=True)
    seq, ens = sides["sequential"], sides["ensemble"]
    members = args.members
    result = {
        "benchmark": "ensemble of tiny models vs the same trials trained sequentially (benchmarks/ensemble.py)",
        "members": members,
        "steps": args.steps,
        "overrides_of_configs_tiny": OVERRIDES,
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "python": platform.python_version()},
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "sequential": seq,
        "ensemble": ens,
        "wall_speedup": seq["wall_seconds"] / ens["wall_seconds"],
        # members' steps per second: ensemble (members per step / step time) over sequential (1 / step time)
        "steady_state_speedup": members * seq["steady_step_seconds"] / ens["steady_step_seconds"],
        "max_relative_val_loss_difference": max(abs(a - b) / abs(b) for a, b in zip(ens["val_loss"], seq["val_loss"])),
    }
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("wall_speedup", "steady_state_speedup",
                                             "max_relative_val_loss_difference")}, indent=2))


if __name__ == "__main__":
    main()
