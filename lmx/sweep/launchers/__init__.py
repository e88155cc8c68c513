"""Launchers: where the trials of a sweep run. A launcher takes `Job`s (lmx.sweep.launchers.base) from
the runner and reports each process's start and exit code; the runner keeps the trials' status files.

`local`: a pool of worker processes on this machine, each pinned to its own CPUs (launchers/local.py).
"""

from lmx.sweep.launchers import local
from lmx.sweep.launchers.base import Job

LAUNCHERS = {"local": local.LocalLauncher}

__all__ = ["LAUNCHERS", "Job"]
