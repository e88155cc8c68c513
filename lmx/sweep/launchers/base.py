"""What a launcher runs: a `Job`, one training process for one trial or for an ensemble group."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lmx.sweep.spec import Trial


@dataclasses.dataclass
class Job:
    """A process to run: `argv` (an `lmx train` command, or `python -m lmx.train.ensemble SPEC.json` for
    the members of an ensemble group), its log (stdout and stderr, appended per attempt), how many
    more times it may be rerun in this invocation if it fails, and whether it continues earlier runs."""

    trials: list[Trial]
    argv: list[str]
    log: Path
    ensemble: str | None = None
    retries_left: int = 0
    resume: bool = False

    @property
    def label(self) -> str:
        return self.ensemble or self.trials[0].name
