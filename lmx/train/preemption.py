"""Graceful stop on SIGTERM/SIGINT (and the multi-host preemption notice).

The handler only sets a flag; the loop checks `should_stop(step)` at each step boundary, saves a
checkpoint and returns normally (exit code 0). If the process has not finished within
`grace_seconds` of the signal (e.g. a step or the save hangs), a watchdog ends it with exit code
143 so the scheduler's hard kill is never needed. With several processes (Cloud TPU pods), JAX's
coordination service delivers the preemption notice to every host at the same step through
`multihost_utils.reached_preemption_sync_point`, so all hosts save the same step.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import jax
from jax.experimental import multihost_utils

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class PreemptionGuard:
    def __init__(self, grace_seconds: float):
        self.grace_seconds = grace_seconds
        self.signal_name: str | None = None
        self._previous = {}
        self._watchdog: threading.Timer | None = None

    def __enter__(self) -> PreemptionGuard:
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if self._watchdog is not None:
            self._watchdog.cancel()

    def _handle(self, signum, frame) -> None:
        if self.signal_name is not None:  # a second signal: stop waiting
            os._exit(128 + signum)
        self.signal_name = signal.Signals(signum).name
        self._watchdog = threading.Timer(self.grace_seconds, self._expire)
        self._watchdog.daemon = True
        self._watchdog.start()

    def _expire(self) -> None:
        print(f"lmx train: preemption grace period of {self.grace_seconds:g}s expired; exiting", file=sys.stderr)
        os._exit(143)

    def should_stop(self, step: int) -> bool:
        if jax.process_count() > 1:
            try:
                if multihost_utils.reached_preemption_sync_point(step):
                    self.signal_name = self.signal_name or "preemption notice"
                    return True
            except RuntimeError:  # no preemption service configured for this cluster
                pass
        return self.signal_name is not None
