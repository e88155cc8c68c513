"""Orbax checkpoints of the train state, the data-iterator state and run metadata.

Each step directory holds three items: `state` (the TrainState of lmx.train.state: params, optimizer
state, step, RNG, skipped count; restored directly into the target shardings, so a checkpoint
written under one mesh restores under another; Orbax stores the dataclass's fields as the keys
`params`, `opt_state`, ..., the layout of the former dict state, so no conversion is needed),
`data` (the Grain iterator state as JSON) and `meta` (config, tokenizer and corpus fingerprints).
Saves are asynchronous and atomic (Orbax finalises a step only when every item is written);
restore walks back from the newest step to the newest one that reads cleanly.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import time
import warnings
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from lmx.errors import CheckpointError
from lmx.train.state import TrainState


class Checkpointer:
    def __init__(self, directory: Path, keep: int = 2, async_save: bool = True, save_interval: int = 1):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=True
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def save(self, step: int, state: TrainState, data_state: dict, meta: dict) -> None:
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(data_state),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()

    def read_meta(self, step: int) -> dict:
        restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return restored["meta"]

    def restore(self, abstract_state, step: int | None = None):
        """Restore (step, state, data_state, meta); `abstract_state` leaves carry target shardings
        (`abstract_with_shardings`), and its tree type (TrainState) is the type of `state`.

        With `step=None` the newest readable step is used; unreadable newer steps are skipped with a
        warning. A requested step that does not exist or cannot be read raises CheckpointError.
        """
        def read(candidate):
            restored = self.manager.restore(
                candidate,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state),
                    data=ocp.args.JsonRestore(),
                    meta=ocp.args.JsonRestore(),
                ),
            )
            return candidate, restored["state"], restored["data"], restored["meta"]

        return self._first_readable(step, read)

    def restore_params(self, abstract_params, step: int | None = None):
        """(step, params, meta): only the `params` subtree of the state is read from disk (the
        optimizer state, often twice the parameters' size, is skipped). Same step choice as `restore`."""
        def read(candidate):
            target = {"params": abstract_params}
            restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), target)
            with _orbax_read_leftovers_silenced(), ocp.CheckpointManager(
                    self.directory, item_handlers={"state": ocp.PyTreeCheckpointHandler(),
                                                   "meta": ocp.JsonCheckpointHandler()}) as reader:
                restored = reader.restore(candidate, args=ocp.args.Composite(
                    state=ocp.args.PyTreeRestore(item=target, restore_args=restore_args, partial_restore=True),
                    meta=ocp.args.JsonRestore()))
            params = restored["state"]["params"]
            _check_every_parameter_restored(params, self.directory, candidate)
            return candidate, params, restored["meta"]

        return self._first_readable(step, read)

    def _first_readable(self, step: int | None, read):
        candidates = [step] if step is not None else list(reversed(self.steps()))
        if not candidates or (step is not None and step not in self.steps()):
            raise CheckpointError(f"no checkpoint{'' if step is None else f' at step {step}'} in {self.directory}")
        errors = []
        for candidate in candidates:
            try:
                result = read(candidate)
            except OtherLayoutError:
                raise  # not damage: every checkpoint of the run has the same layout
            except Exception as exc:  # orbax raises many types for damaged files
                errors.append(f"step {candidate}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                continue
            if errors:
                warnings.warn("skipped unreadable checkpoints: " + "; ".join(errors), stacklevel=3)
            return result
        raise CheckpointError(f"unreadable checkpoint in {self.directory}: " + "; ".join(errors))


class OtherLayoutError(CheckpointError):
    """The checkpoint holds a different parameter tree (written by another lmx version or model)."""


def _check_every_parameter_restored(params, directory: Path, step: int) -> None:
    """A partial restore leaves parameters the checkpoint lacks as abstract placeholders: refuse them."""
    missing = [jax.tree_util.keystr(path, simple=True, separator=".")
               for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0] if not isinstance(leaf, jax.Array)]
    if missing:
        raise OtherLayoutError(
            f"{directory}: step {step} has no {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} "
            f"({len(missing)} parameters missing): it was written by an older lmx or for another model (lmx 0.1 "
            "checkpoints used the paths blocks.attn.* and blocks.mlp.*, now blocks.mixer.* and blocks.ffn.*); "
            "it does not restore in this version: retrain, or read it with the lmx version that wrote it")


@contextlib.contextmanager
def _orbax_read_leftovers_silenced():
    """A failed partial read (damaged files, a tree that does not match) leaves Orbax's pending
    array-read coroutines behind; collected later they print 'Exception ignored' tracebacks after the
    CheckpointError has already said what is wrong. Collect them here, without the noise."""
    try:
        yield
    except Exception:
        previous = sys.unraisablehook
        sys.unraisablehook = lambda unraisable: (
            None if "_read_array" in getattr(unraisable.object, "__qualname__", "")
            or "Event loop is closed" in str(unraisable.exc_value) else previous(unraisable))
        try:
            for _ in range(3):  # the reads finish on Orbax's threads: give them a moment, then collect
                time.sleep(0.05)
                gc.collect()
        finally:
            sys.unraisablehook = previous
        raise


def abstract_with_shardings(state, shardings):
    """ShapeDtypeStructs carrying the target shardings, the form Orbax restores into."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings
    )
