"""Hand-made run and sweep directories in the formats lmx writes (no training): config.json as
`Config.to_dict()`, summary.json with the keys of lmx.train.loop._summary, metrics.jsonl rows as
lmx.train.hooks' LogMetrics and Evaluate write them, and trial.json per docs/sweeps.md."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from lmx.config import load_config

_TINY = load_config("tiny")


def config_dict(overrides: dict | None = None) -> dict:
    return _TINY.replace(**(overrides or {})).to_dict()


def trial_id(config: dict) -> str:
    """A 10-hex id as the contract computes it (sha256 of the canonical JSON without run_dir/cache_dir)."""
    canonical = json.loads(json.dumps(config))
    canonical["train"].pop("run_dir", None)
    canonical["data"].pop("cache_dir", None)
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()[:10]


def make_run(run_dir: Path, overrides: dict | None = None, *, losses=None, val_losses=None, params: int = 34976,
             wall: float = 30.0, status: str = "completed", summary: bool = True, log_every: int = 2) -> Path:
    """A finished (or, with summary=False, unfinished) run directory.

    losses: train loss per logged step (steps log_every, 2*log_every, ...); val_losses: {step: loss}.
    The summary's final metrics are derived from them as the trainer does."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = config_dict(overrides)
    (run_dir / "config.json").write_text(json.dumps(config, indent=2))
    losses = list(losses if losses is not None else [5.7, 5.6, 5.5, 5.4])
    val_losses = dict(val_losses if val_losses is not None else {len(losses) * log_every: losses[-1] - 0.05})
    tokens = config["data"]["batch_size"] * config["data"]["seq_len"]
    rows = []
    for i, loss in enumerate(losses):
        step = (i + 1) * log_every
        rows.append({"step": step, "grad_norm": 1.0, "loss": loss, "lr": 0.003, "tokens": float(tokens),
                     "z_loss": 0.0, "tokens_per_second": 20000.0, "skipped": 0.0})
        if step in val_losses:
            v = val_losses[step]
            rows.append({"step": step, "val_loss": v, "val_perplexity": math.exp(v), "val_bits_per_byte": v / math.log(2),
                         "val_bits_per_char": v / math.log(2)})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if summary:
        steps = len(losses) * log_every
        final_val = val_losses[max(val_losses)]
        (run_dir / "summary.json").write_text(json.dumps({
            "run_dir": str(run_dir), "status": status, "steps": steps, "params": params,
            "params_non_embedding": params - 10240, "tokens_seen": steps * tokens,
            "flops_per_token_train": 6 * params, "train_flops": 6 * params * steps * tokens,
            "final_train_loss": losses[-1], "val_loss": final_val, "val_perplexity": math.exp(final_val),
            "val_bits_per_byte": final_val / math.log(2), "val_bits_per_char": final_val / math.log(2),
            "tokens_per_second": 20000.0, "skipped_steps": 0, "wall_seconds": wall, "resumed_from": None,
            "corpus_fingerprint": "ab" * 32, "tokenizer_fingerprint": "cd" * 32,
            "data_stats": {"corpus": "stdlib", "docs": 14}, "versions": {"lmx": "0.1.0", "backend": "cpu"},
            "samples": [{"prompt": "def ", "completion": "    "}],
        }, indent=2))
    return run_dir


def make_trial(out: Path, name: str, overrides: dict, *, status: str = "done", attempts: int = 1,
               wall_s: float | None = 31.5, error: str | None = None, run: bool = True, **run_kwargs) -> Path:
    """OUT/trials/<name>--<id>/ with trial.json and (run=True) the run files of make_run."""
    config = config_dict(overrides)
    tid = trial_id(config)
    run_dir = Path(out) / "trials" / f"{name}--{tid}"
    run_dir.mkdir(parents=True, exist_ok=True)
    if run:
        make_run(run_dir, overrides, summary=status in ("done", "preempted"),
                 status="completed" if status == "done" else status, **run_kwargs)
    trial = {"name": name, "id": tid, "overrides": overrides, "status": status, "attempts": attempts,
             "started": "2025-01-01T00:00:00+00:00", "finished": None if status == "running" else "2025-01-01T00:01:00+00:00",
             "wall_s": wall_s, "error": error, "pid": None, "host": "testhost", "launcher": "local", "ensemble": None}
    (run_dir / "trial.json").write_text(json.dumps(trial, indent=2))
    return run_dir


def write_sweep_json(out: Path, name: str, trials: list[Path]) -> None:
    entries = []
    for run_dir in trials:
        trial = json.loads((run_dir / "trial.json").read_text())
        entries.append({"name": trial["name"], "id": trial["id"], "overrides": trial["overrides"]})
    (Path(out) / "sweep.json").write_text(json.dumps({"name": name, "file": "experiments/x.py", "base": "tiny",
                                                      "created": "2025-01-01T00:00:00+00:00", "trials": entries}))
