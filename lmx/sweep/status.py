"""A trial's status file (RUN/trial.json) and `lmx sweep status`.

trial.json: {"name", "id", "overrides", "status", "attempts", "started", "finished", "wall_s", "error",
"pid", "host", "launcher", "ensemble"}, written atomically (tmp file + os.replace) by the launcher.
`status` is one of pending, running, done, failed, preempted; a "running" trial whose process is gone
from this host is *interrupted* (a state read, never written): the next `lmx sweep run` resumes it.
`wall_s` adds up the finished attempts; `started` is when the latest attempt began.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path

from lmx.errors import ConfigError

PENDING, RUNNING, DONE, FAILED, PREEMPTED = "pending", "running", "done", "failed", "preempted"
STATUSES = (PENDING, RUNNING, DONE, FAILED, PREEMPTED)
INTERRUPTED = "interrupted"  # running, but its process is gone: resumed by the next run
STATES = (DONE, RUNNING, INTERRUPTED, PREEMPTED, FAILED, PENDING)  # the order `lmx sweep status` counts them

TRIAL_FILE = "trial.json"
SWEEP_FILE = "sweep.json"


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def new_trial_status(name: str, trial_id: str, overrides: dict, launcher: str) -> dict:
    return {"name": name, "id": trial_id, "overrides": overrides, "status": PENDING, "attempts": 0,
            "started": None, "finished": None, "wall_s": None, "error": None, "pid": None, "host": None,
            "launcher": launcher, "ensemble": None}


def read_trial_status(run_dir: str | Path) -> dict | None:
    """RUN/trial.json, or None if the trial has none (not started by a launcher) or it is unreadable."""
    path = Path(run_dir) / TRIAL_FILE
    try:
        status = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return status if isinstance(status, dict) else None


def write_trial_status(run_dir: str | Path, status: dict) -> None:
    """Write RUN/trial.json atomically (a reader sees the old file or the new one, never a part)."""
    if status.get("status") not in STATUSES:
        raise ValueError(f"trial status must be one of {', '.join(STATUSES)}, got {status.get('status')!r}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{TRIAL_FILE}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(status, indent=2, sort_keys=True))
    os.replace(tmp, run_dir / TRIAL_FILE)


def process_alive(pid: int | None, host: str | None) -> bool | None:
    """Whether the lmx process `pid` still runs; None when it ran on another host (cannot tell)."""
    if not pid:
        return False
    if host and host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:  # a reused pid: the process there now is not an lmx one
        return b"lmx" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


def trial_state(status: dict | None) -> str:
    """The status, with a running trial whose process is gone shown as interrupted."""
    if status is None:
        return PENDING
    state = status.get("status", PENDING)
    if state == RUNNING and process_alive(status.get("pid"), status.get("host")) is False:
        return INTERRUPTED
    return state


def last_logged_step(run_dir: str | Path) -> int | None:
    """The step of the last complete row of RUN/metrics.jsonl (read from its end), or None."""
    path = Path(run_dir) / "metrics.jsonl"
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65536))
            tail = f.read()
    except OSError:
        return None
    for line in reversed(tail.split(b"\n")[:-1]):  # the last piece has no newline yet: still being written
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            continue
    return None


def _configured_steps(run_dir: Path) -> int | None:
    try:
        return int(json.loads((run_dir / "config.json").read_text())["train"]["steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _wall(status: dict | None, state: str) -> float | None:
    if not status:
        return None
    wall = status.get("wall_s")
    if state == RUNNING and status.get("started"):
        started = datetime.datetime.fromisoformat(status["started"])
        wall = (wall or 0.0) + (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds()
    return wall


def sweep_trial_dirs(out: str | Path) -> list[tuple[str, str, Path]]:
    """(name, id, run dir) of the trials of sweep directory `out`: those of OUT/sweep.json, then any other
    OUT/trials/* holding a trial.json."""
    out = Path(out)
    listed = []
    try:
        manifest = json.loads((out / SWEEP_FILE).read_text())
        listed = [(t["name"], t["id"], out / "trials" / f"{t['name']}--{t['id']}") for t in manifest["trials"]]
    except (OSError, ValueError, KeyError, TypeError):
        if not (out / "trials").is_dir():
            raise ConfigError(f"{out}: not a sweep directory (no {SWEEP_FILE}, no trials/)") from None
    seen = {path.name for _, _, path in listed}
    for path in sorted((out / "trials").glob(f"*/{TRIAL_FILE}")):
        if path.parent.name not in seen:
            name, _, identifier = path.parent.name.rpartition("--")
            listed.append((name, identifier, path.parent))
    return listed


def print_status(out: str | Path, print_fn: Callable[[str], None] = print) -> int:
    """Print the counts per state and one line per trial (name, id, state, step/steps, wall time, and the
    last line of a failed trial's error). Returns 0."""
    out = Path(out)
    rows = []
    for name, identifier, run_dir in sweep_trial_dirs(out):
        status = read_trial_status(run_dir)
        state = trial_state(status)
        step, steps = last_logged_step(run_dir), _configured_steps(run_dir)
        progress = f"{step if step is not None else 0}/{steps}" if steps else "-"
        note = ""
        if state == FAILED and status and status.get("error"):
            lines = [line for line in str(status["error"]).splitlines() if line.strip()]
            note = lines[-1][:160] if lines else ""
        elif state == RUNNING and status and process_alive(status.get("pid"), status.get("host")) is None:
            note = f"on {status.get('host')}"
        rows.append((name, identifier, state, progress, format_seconds(_wall(status, state)), note))
    counts = {state: sum(row[2] == state for row in rows) for state in STATES}
    summary = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    print_fn(f"{out}: {len(rows)} trial{'s' * (len(rows) != 1)}" + (f": {summary}" if summary else ""))
    width = max([len("name")] + [len(row[0]) for row in rows])
    print_fn(f"  {'name':<{width}}  {'id':<10}  {'status':<11}  {'progress':>11}  {'wall':>7}")
    for name, identifier, state, progress, wall, note in rows:
        line = f"  {name:<{width}}  {identifier:<10}  {state:<11}  {progress:>11}  {wall:>7}"
        print_fn(line + (f"  {note}" if note else ""))
    return 0
