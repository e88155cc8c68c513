"""Orbax checkpoints of the train state, the data-iterator state and run metadata, with checksums.

Each step directory holds four items: `state` (the TrainState of lmx.train.state: params, optimizer
state, step, RNG, skipped count; restored directly into the target shardings, so a checkpoint
written under one mesh restores under another; Orbax stores the dataclass's fields as the keys
`params`, `opt_state`, ..., the layout of the former dict state, so no conversion is needed),
`data` (the data position as JSON), `meta` (config, tokenizer and corpus fingerprints) and
`integrity` (a checksum of every array of `state` and of the `data` JSON, lmx.train.integrity).
Saves are asynchronous and atomic (Orbax finalises a step only when every item is written).

Every restore verifies the arrays it read against `integrity`; a mismatch names the step and the
array. `restore(..., fallback=True)` (resume) walks back from the newest step to the newest one that
reads and verifies, recording the damaged ones in `skipped`; otherwise a damaged checkpoint is a
CheckpointError. A checkpoint written before checksums existed restores with a CheckpointNotice.
A save that fails (no space, permission, I/O error), now or in the background, is a CheckpointError
naming the step and the cause; the step's temporary directory is removed and earlier steps stay.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
import warnings
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from lmx.errors import CheckpointError
from lmx.train.integrity import ALGORITHM, leaf_path, tree_checksums, verify
from lmx.train.state import TrainState


class CheckpointNotice(UserWarning):
    """Something the user should know about a restored checkpoint that did not stop the restore."""


class TreeMismatch(CheckpointError):
    """The checkpoint's arrays are not this model's (other paths or shapes): the same at every step."""


class Checkpointer:
    """The run's checkpoints/ directory. `writer=False` (lmx.load, eval, generate) only reads: it
    never creates, cleans or deletes anything, so it can run beside a training process."""

    def __init__(self, directory: Path, keep: int = 2, async_save: bool = True, save_interval: int = 1,
                 writer: bool = True):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=writer,
            cleanup_tmp_directories=writer,  # an interrupted save's leftovers (the writer holds the run lock)
        )
        _quiet_orbax_leftovers()
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        self.in_flight: int | None = None  # the step whose asynchronous save may still be running
        self.skipped: list[tuple[int, str]] = []  # (step, reason) of damaged steps the last restore passed over
        self.continue_hint = ""  # how to continue after a failed save (the train loop sets it)

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    # -- saving --

    def save(self, step: int, state: TrainState, data_state: dict, meta: dict) -> None:
        self.wait()  # a failure of the previous background save is reported under its own step
        integrity = {"algorithm": ALGORITHM, "arrays": tree_checksums(state), "data_sha256": _json_digest(data_state)}
        try:
            self.manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    data=ocp.args.JsonSave(data_state),
                    meta=ocp.args.JsonSave(meta),
                    integrity=ocp.args.JsonSave(integrity),
                ),
                force=True,
            )
        except Exception as exc:
            raise self._save_failed(step, exc) from None
        self.in_flight = step

    def check(self) -> None:
        """Raise the failure of a finished background save now (cheap; call it every step)."""
        if self.in_flight is not None and not self.manager.is_saving_in_progress():
            self.wait()

    def wait(self) -> None:
        """Block until the background save is written; CheckpointError naming its step if it failed."""
        step, self.in_flight = self.in_flight, None
        try:
            self.manager.wait_until_finished()
        except Exception as exc:
            raise self._save_failed(step, exc) from None

    def close(self) -> None:
        try:
            self.wait()
        finally:
            with contextlib.suppress(Exception):  # a failed save was reported by wait()
                self.manager.close()

    def _save_failed(self, step: int | None, exc: BaseException) -> CheckpointError:
        if step is not None:
            for leftover in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
                shutil.rmtree(leftover, ignore_errors=True)
        intact = [s for s in self.steps() if s != step] if self.directory.is_dir() else []
        earlier = f"earlier checkpoints are intact (newest: step {intact[-1]})" if intact else "no earlier checkpoint"
        hint = f"; once fixed, {self.continue_hint}" if self.continue_hint else ""
        return CheckpointError(f"saving the checkpoint of step {step} to {self.directory} failed: "
                               f"{failure_cause(exc, self.directory)}; {earlier}{hint}")

    # -- restoring --

    def read_meta(self, step: int) -> dict:
        restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return restored["meta"]

    def restore(self, abstract_state, step: int | None = None, fallback: bool = True):
        """Restore (step, state, data_state, meta); `abstract_state` leaves carry target shardings
        (`abstract_with_shardings`), and its tree type (TrainState) is the type of `state`.

        `step=None`: the newest step; with `fallback` an unreadable or damaged newest step is passed
        over (listed in `self.skipped`) for the newest one that reads and verifies. A requested step
        that does not exist, cannot be read or does not verify raises CheckpointError.
        """
        def read(candidate):
            self._check_tree(candidate, abstract_state)
            has_checksums = self._has_integrity(candidate)
            items = dict(state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore(),
                         meta=ocp.args.JsonRestore())
            if has_checksums:
                items["integrity"] = ocp.args.JsonRestore()
            with _orbax_read_leftovers_silenced():
                restored = self.manager.restore(candidate, args=ocp.args.Composite(**items))
            self._verify(candidate, restored["state"], restored.get("integrity") if has_checksums else None,
                         restored["data"])
            return candidate, restored["state"], restored["data"], restored["meta"]

        return self._first_readable(step, read, fallback)

    def restore_params(self, abstract_params, step: int | None = None, fallback: bool = False):
        """(step, params, meta): only the `params` subtree of the state is read from disk (the
        optimizer state, often twice the parameters' size, is skipped). Step choice as in `restore`,
        without falling back by default: a damaged newest step is an error naming the steps to pick."""
        def read(candidate):
            target = {"params": abstract_params}
            self._check_tree(candidate, target)
            has_checksums = self._has_integrity(candidate)
            restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), target)
            items = dict(state=ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True),
                         meta=ocp.args.JsonRestore())
            handlers = {"state": ocp.PyTreeCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
            if has_checksums:
                items["integrity"] = ocp.args.JsonRestore()
                handlers["integrity"] = ocp.JsonCheckpointHandler()
            with _orbax_read_leftovers_silenced(), ocp.CheckpointManager(
                    self.directory, item_handlers=handlers,
                    options=ocp.CheckpointManagerOptions(create=False)) as reader:
                restored = reader.restore(candidate, args=ocp.args.Composite(**items))
            self._verify(candidate, restored["state"], restored.get("integrity") if has_checksums else None)
            return candidate, restored["state"]["params"], restored["meta"]

        return self._first_readable(step, read, fallback)

    def _has_integrity(self, step: int) -> bool:
        return (self.directory / str(step) / "integrity").is_dir()

    def _verify(self, step: int, tree, integrity: dict | None, data_state: dict | None = None) -> None:
        where = f"checkpoint step {step} in {self.directory}"
        if integrity is None:
            warnings.warn(f"{where} has no checksums (written by an lmx before they existed); restored without "
                          "verifying its bytes", CheckpointNotice, stacklevel=4)
            return
        if integrity.get("algorithm") != ALGORITHM:
            raise CheckpointError(f"{where}: unknown checksum algorithm {integrity.get('algorithm')!r} "
                                  f"(this lmx computes {ALGORITHM}); written by a newer lmx?")
        verify(tree, integrity.get("arrays", {}), where)
        if data_state is not None and integrity.get("data_sha256") not in (None, _json_digest(data_state)):
            raise CheckpointError(f"{where}: the data position (item data) does not match its saved checksum")

    def _check_tree(self, step: int, target) -> None:
        """CheckpointError when the saved arrays' paths or shapes are not those of `target`, read from the
        checkpoint's tree metadata before any array (a clear message instead of Orbax's)."""
        try:
            metadata = ocp.PyTreeCheckpointHandler().metadata(self.directory / str(step) / "state")
        except Exception:
            return  # unreadable metadata: the restore itself reports it
        tree = getattr(metadata, "tree", metadata)
        saved = {leaf_path(path, variable_value=True): leaf for path, leaf in
                 jax.tree_util.tree_flatten_with_path(tree)[0]}
        wanted = {leaf_path(path, variable_value=True): leaf for path, leaf in
                  jax.tree_util.tree_flatten_with_path(target)[0]}
        where = f"checkpoint step {step} in {self.directory}"
        missing = sorted(p for p in wanted if p not in saved)
        if missing:
            params = sorted(p for p in saved if p.startswith("params.") and p not in wanted)
            raise TreeMismatch(
                f"{where} was written by an older lmx or another model: its parameter paths changed "
                f"({len(missing)} arrays of this model are not in it, e.g. {_short(missing[0])}"
                + (f"; it has {_short(params[0])} instead" if params else "")
                + "); restore it with the lmx version that wrote it, or train again")
        for path, leaf in wanted.items():
            shape = tuple(getattr(saved[path], "shape", None) or ())
            if getattr(saved[path], "shape", None) is not None and shape != tuple(leaf.shape):
                raise TreeMismatch(f"{where}: array {_short(path)} has shape {shape} in the checkpoint but "
                                      f"{tuple(leaf.shape)} in the model built from the run's config")

    def _first_readable(self, step: int | None, read, fallback: bool):
        steps = self.steps()
        if step is not None and step not in steps:
            raise CheckpointError(f"no checkpoint at step {step} in {self.directory}"
                                  + (f" (steps: {', '.join(map(str, steps))})" if steps else ""))
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        single = step is not None or not fallback
        candidates = [step] if step is not None else [steps[-1]] if single else list(reversed(steps))
        self.skipped = []
        retries = 3  # a reader beside a training run: the newest step may be replaced while it is read
        while candidates:
            candidate = candidates.pop(0)
            try:
                return read(candidate)
            except TreeMismatch:
                raise  # the same for every step
            except CheckpointError as exc:
                reason = str(exc)
            except Exception as exc:  # orbax raises many types for damaged files
                reason = f"unreadable ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
            if not (self.directory / str(candidate)).exists() and step is None and retries:
                retries -= 1
                self.manager.reload()
                newer = [s for s in self.steps() if s > candidate]
                candidates = ([newer[-1]] if newer else []) + candidates
                continue
            self.skipped.append((candidate, _without_where(reason, candidate, self.directory)))
        first_step, first_reason = self.skipped[0]
        others = [s for s in steps if s != first_step]
        if single and step is None and others:
            raise CheckpointError(
                f"checkpoint step {first_step} in {self.directory} is damaged: {first_reason}; to use an earlier "
                f"checkpoint name its step (--step, or step= in Python): {', '.join(map(str, reversed(others)))}")
        if single:
            raise CheckpointError(f"checkpoint step {first_step} in {self.directory} is damaged: {first_reason}")
        raise CheckpointError(f"no checkpoint in {self.directory} reads and verifies: "
                              + "; ".join(f"step {s}: {r}" for s, r in self.skipped))


def _without_where(reason: str, step: int, directory: Path) -> str:
    prefix = f"checkpoint step {step} in {directory}: "
    return reason[len(prefix):] if reason.startswith(prefix) else reason


def _short(path: str) -> str:
    """`params.blocks.mixer.query.value` -> `params.blocks.mixer.query` (the Variable's own `.value`)."""
    return path[: -len(".value")] if path.startswith(("params.", "opt_state.")) and path.endswith(".value") else path


def _json_digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def failure_cause(exc: BaseException, directory: Path | None = None) -> str:
    """One short phrase for why a write failed: the OS error (`No space left on device`) when there is one,
    with the file when it lies outside `directory` (the checkpoint directory the message names anyway)."""
    def where(path):
        return "" if not path or (directory is not None and str(path).startswith(str(directory))) else f" ({path})"

    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno) + where(exc.filename)
    text = str(exc)
    code = re.search(r"os_error_code='?(\d+)", text) or re.search(r"\[Errno (\d+)\]", text)
    if code:
        path = re.search(r'local file "([^"]+)"', text)
        return os.strerror(int(code.group(1))) + where(path.group(1) if path else None)
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first[:200]}"


_LEFTOVER_FILTERS_INSTALLED = False


def _raised_in_orbax(record: logging.LogRecord) -> bool:
    traceback = record.exc_info[2] if record.exc_info else None
    while traceback is not None:
        if "orbax" in traceback.tb_frame.f_code.co_filename:
            return True
        traceback = traceback.tb_next
    return "orbax" in record.pathname


def _orbax_leftover(unraisable) -> bool:
    """An exception nobody can catch that a failed Orbax read or write leaves behind: an array-read
    coroutine collected after its failure, or a TensorStore callback into the event loop Orbax had
    already closed ('Event loop is closed', raised in asyncio's call_soon_threadsafe)."""
    if "_read_array" in getattr(unraisable.object, "__qualname__", ""):
        return True
    if isinstance(unraisable.exc_value, RuntimeError) and "Event loop is closed" in str(unraisable.exc_value):
        traceback = unraisable.exc_traceback
        while traceback is not None:
            if traceback.tb_frame.f_code.co_name == "call_soon_threadsafe":
                return True
            traceback = traceback.tb_next
    return False


def _quiet_orbax_leftovers() -> None:
    """After a failed save or read, Orbax logs the failure with its traceback on its own threads, asyncio
    logs the futures it left, and late TensorStore callbacks print 'Event loop is closed' tracebacks;
    lmx reports the failure as one CheckpointError, so these duplicates are dropped (once per process;
    every other log record and unraisable exception is left alone)."""
    global _LEFTOVER_FILTERS_INSTALLED
    if _LEFTOVER_FILTERS_INSTALLED:
        return
    _LEFTOVER_FILTERS_INSTALLED = True
    logging.getLogger("absl").addFilter(
        lambda record: not (record.levelno >= logging.ERROR and _raised_in_orbax(record)))
    logging.getLogger("asyncio").addFilter(
        lambda record: not ("never retrieved" in record.getMessage() and _raised_in_orbax(record)))
    previous = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None if _orbax_leftover(unraisable) else previous(unraisable)


@contextlib.contextmanager
def _orbax_read_leftovers_silenced():
    """A failed read (damaged files, a tree that does not match) leaves Orbax's pending array-read
    coroutines behind; collect them now (quietly, `_quiet_orbax_leftovers`), not at some later point."""
    try:
        yield
    except Exception:
        for _ in range(3):  # the reads finish on Orbax's threads: give them a moment, then collect
            time.sleep(0.05)
            gc.collect()
        raise


def abstract_with_shardings(state, shardings):
    """ShapeDtypeStructs carrying the target shardings, the form Orbax restores into."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
    )
