"""Live progress bar (step, loss, tokens/s, ETA) on a terminal; periodic plain lines otherwise."""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class TrainProgress:
    def __init__(self, total_steps: int, start_step: int, console: Console | None = None, enabled: bool = True):
        self.console = console or Console(stderr=True)
        self.total = total_steps
        self.enabled = enabled
        self.live = enabled and self.console.is_terminal
        self._last_plain = 0.0
        self._progress = None
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                TextColumn("step {task.completed}/{task.total}"),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[tps]} tok/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._task = self._progress.add_task("train", total=total_steps, completed=start_step, loss="-", tps="-")
            self._progress.start()

    def update(self, step: int, loss: float, tokens_per_second: float, eta_seconds: float) -> None:
        if not self.enabled:
            return
        if self.live:
            self._progress.update(self._task, completed=step, loss=f"{loss:.4f}", tps=f"{tokens_per_second:,.0f}")
            return
        now = time.monotonic()
        if now - self._last_plain >= 10 or step == self.total:
            self._last_plain = now
            print(
                f"step {step}/{self.total}  loss {loss:.4f}  {tokens_per_second:,.0f} tok/s  ETA {eta_seconds:.0f}s",
                file=sys.stderr,
                flush=True,
            )

    def message(self, text: str) -> None:
        if self.enabled:
            self.console.print(text)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
