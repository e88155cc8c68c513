"""A/B of two lmx source trees, interleaved: the default train step and KV-cached decoding.

Used to check a refactor against the commit before it (the machine is shared and noisy, so the two
trees alternate, run after run, and the ratio of medians is reported):

    python benchmarks/restructure_ab.py --base ad2222a --repeats 3

`--base` is a commit; it is checked out into a temporary git worktree. Each measurement runs in a
fresh subprocess with PYTHONPATH pointing at one tree:
    train   `lmx train` on configs/default.py for --steps steps (no eval, checkpoint or samples
            inside the timed window); tokens/s as the run's summary reports it (steady-state steps)
    decode  greedy generate_tokens of the decode benchmark's "small" model (256 wide, 4 layers),
            batch 1 and 8, 64-token prompts, 128 new tokens; tokens/s of the decode loop
Results: benchmarks/results/restructure_ab.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DECODE = r"""
import json, time, sys
import jax, jax.numpy as jnp, numpy as np
from flax import nnx
from lmx.config import ModelConfig
from lmx.nn import build_model
from lmx.decode.engine import generate_tokens
config = ModelConfig(d_model=256, n_layers=4, n_heads=8, n_kv_heads=4, d_ff=704, vocab_size=4096, max_seq_len=512,
                     tie_embeddings=False)
model = build_model(config, rngs=nnx.Rngs(0))
out = {}
for batch in (1, 8):
    prompts = np.random.default_rng(0).integers(3, 4096, size=(batch, 64)).tolist()
    generate_tokens(model, prompts, max_new_tokens=8)  # compile
    generate_tokens(model, prompts, max_new_tokens=128)
    best = None
    for _ in range(3):
        t0 = time.perf_counter()
        res = generate_tokens(model, prompts, max_new_tokens=128)
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    out[f"decode_b{batch}_tok_s"] = batch * 128 / best
print(json.dumps(out))
"""


def _run(tree: Path, args: list[str], env: dict) -> subprocess.CompletedProcess:
    env = {**env, "PYTHONPATH": str(tree)}
    return subprocess.run(args, cwd=tree, env=env, capture_output=True, text=True)


def measure_train(tree: Path, steps: int, env: dict) -> float:
    with tempfile.TemporaryDirectory() as run_dir:
        overrides = [f"train.steps={steps}", f"train.eval_every={steps}", f"train.checkpoint_every={steps}",
                     "eval.sample_tokens=0", "train.eval_batches=1"]
        cmd = [sys.executable, "-m", "lmx.cli", "train", "--quiet", "--run-dir", run_dir]
        for o in overrides:
            cmd += ["--set", o]
        proc = _run(tree, cmd, env)
        if proc.returncode:
            raise SystemExit(f"train failed in {tree}:\n{proc.stderr[-3000:]}")
        return json.loads((Path(run_dir) / "summary.json").read_text())["tokens_per_second"]


def measure_decode(tree: Path, env: dict) -> dict:
    proc = _run(tree, [sys.executable, "-c", DECODE], env)
    if proc.returncode:
        raise SystemExit(f"decode failed in {tree}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="commit to compare against (checked out in a worktree)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "restructure_ab.json"))
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="lmx-base-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(base), args.base], cwd=ROOT, check=True,
                   capture_output=True)
    env = dict(os.environ)
    trees = {"base": base, "head": ROOT}
    runs = {name: [] for name in trees}
    try:
        for r in range(args.repeats):
            for name, tree in trees.items():  # interleaved: base, head, base, head, ...
                row = {"train_tok_s": measure_train(tree, args.steps, env), **measure_decode(tree, env)}
                runs[name].append(row)
                print(f"repeat {r} {name}: {row}", flush=True)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, capture_output=True)
    medians = {name: {k: statistics.median(row[k] for row in rows) for k in rows[0]} for name, rows in runs.items()}
    ratios = {k: medians["head"][k] / medians["base"][k] for k in medians["head"]}
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    result = {"base": args.base, "head": head, "repeats": args.repeats, "steps": args.steps, "runs": runs,
              "medians": medians, "head_over_base": ratios}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({"medians": medians, "head_over_base": ratios}, indent=2))


if __name__ == "__main__":
    main()
