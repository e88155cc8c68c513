"""Run directories: create, check that an existing one holds the same config, and find files.

runs/NAME/ config.json, tokenizer/, checkpoints/, metrics.jsonl, events/, summary.json
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from pathlib import Path

from lmx.config import Config
from lmx.errors import CheckpointError, ConfigError

RUN_FILES = ("checkpoints", "metrics.jsonl", "events", "summary.json", "tokenizer", "config.json")


def default_run_dir(config: Config) -> Path:
    if config.train.run_dir:
        return Path(config.train.run_dir)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.name}-{stamp}"


def read_run_config(run_dir: Path, option: str = "--run") -> Config:
    """The config.json of a run; `option` is the command-line flag that named the directory."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{option}: {run_dir} is not an lmx run directory (no config.json)")
    try:
        return Config.from_dict(json.loads(path.read_text()))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{option}: {path} is not valid JSON: {exc}") from None


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for key in keys:
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict) and key != "shape":
            out += _differences(left, right, f"{prefix}{key}.")
        elif left != right:
            out.append(f"{prefix}{key}: {left!r} -> {right!r}")
    return out


def checkpoint_bytes(config: Config) -> int:
    """Bytes of one checkpoint: parameters in their dtype plus two float32 AdamW moments each."""
    from lmx.nn import param_count

    param_bytes = 2 if config.model.param_dtype == "bfloat16" else 4
    return param_count(config.model) * (param_bytes + 8)


def check_free_space(run_dir: Path, bytes_per_checkpoint: int, keep: int) -> None:
    """Refuse to start when the disk cannot hold `keep + 1` checkpoints (one being written)."""
    needed = bytes_per_checkpoint * (keep + 1)
    existing = Path(run_dir).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return  # the path runs through a file; prepare_run_dir reports that
    free = shutil.disk_usage(existing).free
    if free < needed:
        raise CheckpointError(
            f"--run-dir: {run_dir} has {free / 2**20:.1f} MiB free but {keep + 1} checkpoints of "
            f"{bytes_per_checkpoint / 2**20:.1f} MiB need {needed / 2**20:.1f} MiB (train.keep_checkpoints={keep})"
        )


def prepare_run_dir(run_dir: Path, config: Config, resume: bool, force: bool) -> None:
    """Check an existing directory before anything is written; create it for a new run.

    A directory holding a different config is refused unless `force`; one holding the same config
    must be continued with `resume` or restarted with `force` (which deletes its previous files).
    """
    run_dir = Path(run_dir)
    saved = run_dir / "config.json"
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--run-dir: {run_dir} exists and is not a directory")
    if saved.is_file():
        old = json.loads(saved.read_text())
        diff = _differences(old, config.to_dict())
        if resume and not diff:
            return
        if not force:
            if diff:
                raise CheckpointError(
                    f"--run-dir: {run_dir} holds a run with a different config ({'; '.join(diff[:3])}); "
                    "choose another directory or pass --force to overwrite it"
                )
            raise CheckpointError(
                f"--run-dir: {run_dir} already holds this run; pass --resume to continue it "
                "or --force to start over"
            )
        for name in RUN_FILES:
            target = run_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    elif resume:
        raise CheckpointError(f"--resume: {run_dir} holds no run to resume (no config.json)")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".lmx-write-test"
        probe.write_text("ok")
        probe.unlink()
        tmp = saved.with_suffix(".json.tmp")
        tmp.write_text(config.to_json())
        os.replace(tmp, saved)
    except OSError as exc:
        raise CheckpointError(f"--run-dir: cannot write to {run_dir}: {exc.strerror or exc}") from None
