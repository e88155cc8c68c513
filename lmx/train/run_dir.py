"""Run directories: check, lock, create, and find files.

runs/NAME/ config.json, tokenizer/, checkpoints/, metrics.jsonl, events/, summary.json, .lock

`check_run_dir` refuses a directory that cannot be used (before anything is written);
`RunLock` is the exclusive lock a training process holds on the directory; `prepare_run_dir`
(under the lock) writes config.json, or clears the directory for `--force`.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import shutil
import socket
from pathlib import Path

from lmx.config import Config
from lmx.errors import CheckpointError, ConfigError
from lmx.nn import param_count

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


def check_run_dir(run_dir: Path, config: Config, resume: bool, force: bool) -> str:
    """Refuse a directory this run cannot use, writing nothing; returns what `prepare_run_dir` will do:
    "resume", "overwrite" (--force on an existing run) or "create".

    A directory holding a different config is refused unless `force`; one holding the same config
    must be continued with `resume` or restarted with `force` (which deletes its previous files).
    """
    run_dir = Path(run_dir)
    saved = run_dir / "config.json"
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--run-dir: {run_dir} exists and is not a directory")
    if saved.is_file():
        try:
            old = json.loads(saved.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"--run-dir: {saved} cannot be read ({exc}); pass --force to start over") from None
        diff = _differences(old, config.to_dict())
        if resume and not diff:
            return "resume"
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
        return "overwrite"
    if resume:
        raise CheckpointError(f"--resume: {run_dir} holds no run to resume (no config.json)")
    return "create"


def prepare_run_dir(run_dir: Path, config: Config, resume: bool, force: bool) -> None:
    """`check_run_dir`, then write config.json (a new run) or clear the directory (`force`). Call it
    holding the directory's RunLock."""
    run_dir = Path(run_dir)
    saved = run_dir / "config.json"
    action = check_run_dir(run_dir, config, resume, force)
    if action == "resume":
        return
    if action == "overwrite":
        for name in RUN_FILES:
            target = run_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
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


LOCK_FILE = ".lock"


class RunLock:
    """An exclusive lock on a run directory, held by the process that trains into it.

    An OS file lock (`flock` on RUN/.lock): the kernel releases it when the process exits in any
    way, `kill -9` included, so no stale lock is ever left. The file holds the holder's pid and host,
    which a refused second process names. Readers (`lmx eval`, `lmx generate`, `lmx.load`) take no
    lock: Orbax makes a checkpoint visible only once it is complete. (flock is local to one machine
    or a filesystem that implements it; on a network filesystem without it, start one writer.)
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Create the directory if needed and take the lock; CheckpointError naming the holder if taken."""
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise CheckpointError(f"--run-dir: cannot write to {self.run_dir}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").split()
            os.close(fd)
            who = f"pid {holder[0]}" + (f" on {holder[1]}" if len(holder) > 1 and holder[1] != socket.gethostname()
                                         else "") if holder else "another process"
            raise CheckpointError(
                f"--run-dir: {self.run_dir} is in use by another lmx train ({who}); wait for it to finish or "
                "stop it (its lock is released when it exits)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        return self

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
