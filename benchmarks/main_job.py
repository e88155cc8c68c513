"""Benchmark the main job: `lmx train` on configs/default.py, cold (empty cache) and warm.

Records wall time (including corpus caching and tokenizer training on the cold run), tokens/s,
final validation loss and bits per byte into benchmarks/results/main_job.json. The goal from the
spine issue is a cold wall time of at most 300 s on a 2-core CPU.

    python benchmarks/main_job.py            # cold + warm
    python benchmarks/main_job.py --warm-only
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

ROOT = Path(__file__).resolve().parent.parent


def run_once(cache_dir: str, run_dir: str) -> dict:
    env = {**os.environ, "LMX_CACHE": cache_dir}
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "lmx.cli", "train", "--quiet", "--run-dir", run_dir],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"lmx train failed:\n{proc.stderr[-2000:]}")
    summary = json.loads((Path(run_dir) / "summary.json").read_text())
    return {
        "process_wall_seconds": round(wall, 1),
        "train_wall_seconds": round(summary["wall_seconds"], 1),
        "tokens_per_second": round(summary["tokens_per_second"], 1),
        "val_loss": round(summary["val_loss"], 4),
        "val_bits_per_byte": round(summary["val_bits_per_byte"], 4),
        "val_perplexity": round(summary["val_perplexity"], 2),
        "params": summary["params"],
        "tokens_seen": summary["tokens_seen"],
        "samples": summary["samples"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--warm-only", action="store_true")
    args = parser.parse_args()
    results = {"machine": f"{platform.machine()} {os.cpu_count()} cores", "python": platform.python_version()}
    with tempfile.TemporaryDirectory() as tmp:
        cache = os.path.join(tmp, "cache")
        if not args.warm_only:
            results["cold"] = run_once(cache, os.path.join(tmp, "cold"))
            print("cold:", json.dumps(results["cold"]))
        else:
            cache = os.environ.get("LMX_CACHE", str(Path.home() / ".cache" / "lmx"))
        results["warm"] = run_once(cache, os.path.join(tmp, "warm"))
        print("warm:", json.dumps(results["warm"]))
    out = ROOT / "benchmarks" / "results" / "main_job.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
