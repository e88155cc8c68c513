"""Metric sinks: `metrics.jsonl` (one JSON object per logged step) and TensorBoard event files."""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path

from lmx.errors import CheckpointError


def _plain(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return value
    return value if math.isfinite(value) else str(value)


class MetricsWriter:
    """Append-only metric log. On resume, entries past the restored step are dropped first."""

    def __init__(self, run_dir: Path, truncate_after_step: int | None = None, tensorboard: bool = True):
        self.path = Path(run_dir) / "metrics.jsonl"
        if truncate_after_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and _step(line) <= truncate_after_step]
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            os.replace(tmp, self.path)  # a kill during the rewrite leaves the old file, never half of it
        self._file = self.path.open("a")
        self._tb = None
        if tensorboard:
            # seconds to import (it loads torch when installed): only when TensorBoard logging is on
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(Path(run_dir) / "events"))

    def write(self, step: int, metrics: dict, prefix: str = "") -> None:
        row = {"step": int(step), **{f"{prefix}{k}": _plain(v) for k, v in metrics.items()}}
        try:
            self._file.write(json.dumps(row) + "\n")
            self._file.flush()
        except OSError as exc:
            raise CheckpointError(f"writing {self.path} at step {step} failed: {exc.strerror or exc}") from None
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, float):
                    self._tb.add_scalar(key, value, step)

    def close(self, quiet: bool = False) -> None:
        """Close both sinks; a write that fails here (a full disk) is a CheckpointError, or, with `quiet`
        (another error is being reported), dropped."""
        try:
            try:
                self._file.close()
            finally:
                if self._tb is not None:
                    tb, self._tb = self._tb, None
                    try:
                        tb.close()
                    except OSError:
                        _abandon(tb)
                        raise
        except OSError as exc:
            if not quiet:
                raise CheckpointError(f"writing the metrics of {self.path.parent} failed: {exc.strerror or exc}") from None


def _abandon(tb) -> None:
    """After a failed close (disk full): stop tensorboardX's writer thread and mark its event writer
    closed, so neither its thread nor its exit handler retries the write and prints a traceback."""
    writers = [getattr(tb, "file_writer", None), *getattr(tb, "all_writers", {}).values()]
    for writer in writers:
        events = getattr(writer, "event_writer", None)
        if events is None or getattr(events, "_closed", True):
            continue
        worker = getattr(events, "_worker", None)
        with contextlib.suppress(Exception):
            if worker is not None and worker.is_alive():
                worker.stop()
        events._closed = True


def _step(line: str) -> float:
    try:
        return json.loads(line).get("step", 0)
    except json.JSONDecodeError:
        return math.inf  # a row cut short by a kill: dropped (the resumed run logs that step again)


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
