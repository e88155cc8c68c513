"""Metric sinks: `metrics.jsonl` (one JSON object per logged step) and TensorBoard event files."""

from __future__ import annotations

import json
import math
from pathlib import Path


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
                    if line.strip() and json.loads(line).get("step", 0) <= truncate_after_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        self._file = self.path.open("a")
        self._tb = None
        if tensorboard:
            # seconds to import (it loads torch when installed): only when TensorBoard logging is on
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(Path(run_dir) / "events"))

    def write(self, step: int, metrics: dict, prefix: str = "") -> None:
        row = {"step": int(step), **{f"{prefix}{k}": _plain(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, float):
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
