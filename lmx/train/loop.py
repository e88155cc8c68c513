"""The training loop: build everything from a Config, train, evaluate, checkpoint, summarise.

`train(config, run_dir, resume=False, force=False)` is what `lmx train` runs. Everything that can
be checked before a byte is written (devices, mesh, batch divisibility, run directory) is checked
first; a resumed run restores params, optimizer state, step, RNG and the data-iterator state, so it
continues with exactly the batches and losses of an uninterrupted run.

`build_trainer` compiles the steps over the typed train state (lmx.train.state.TrainState);
`TrainLoop.run` fetches a batch, takes a step and runs the hooks due at that step
(lmx.train.hooks: logging, evaluation, checkpoints, preemption, the non-finite policy, samples).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from lmx.config import Config
from lmx.data import prepare_data
from lmx.data.pipeline import data_position, iterator_state_at
from lmx.errors import CheckpointError, ConfigError
from lmx.eval import evaluate
from lmx.nn import flops_per_token, param_count
from lmx.parallel import STRATEGIES, make_mesh
from lmx.parallel.activations import with_activation_sharding
from lmx.parallel.distributed import check_config_agreement, on_process_zero
from lmx.parallel.shardings import batch_sharding, data_parallel_size, tree_shardings
from lmx.train.checkpoint import Checkpointer, CheckpointNotice, abstract_with_shardings
from lmx.train.hooks import Hook, StepEvent, standard_hooks
from lmx.train.metrics import MetricsWriter
from lmx.train.optimizer import make_optimizer
from lmx.train.preemption import PreemptionGuard
from lmx.train.progress import TrainProgress
from lmx.train.run_dir import (
    RunLock,
    check_free_space,
    check_run_dir,
    checkpoint_bytes,
    default_run_dir,
    prepare_run_dir,
)
from lmx.train.state import TrainState, init_train_state, seeded_model
from lmx.train.step import make_eval_step, make_train_step
from lmx.version import __version__


@dataclass
class Trainer:
    """Compiled steps and shardings for one config on one mesh (shared by train, eval and load)."""

    config: Config
    mesh: object
    graphdef: object
    abstract_state: TrainState  # ShapeDtypeStructs (Variables kept)
    state_shardings: TrainState  # NamedShardings, the same tree
    batch_sharding: NamedSharding
    train_step: object  # (TrainState, batch) -> (TrainState, metrics); the state is donated
    eval_step: object  # (params, batch) -> sums
    init_state: object  # () -> TrainState at step 0, laid out in state_shardings


def check_parallelism(config: Config, mesh) -> None:
    rules = STRATEGIES[config.mesh.strategy]
    dp = data_parallel_size(mesh, rules)
    if config.data.batch_size % dp:
        raise ConfigError(
            f"data.batch_size: {config.data.batch_size} is not divisible by the data-parallel size {dp} "
            f"(mesh {dict(mesh.shape)}, strategy {config.mesh.strategy})"
        )
    per_accum = config.data.batch_size // config.optim.grad_accum_steps
    if per_accum % dp:
        raise ConfigError(
            f"optim.grad_accum_steps: micro-batch {per_accum} is not divisible by the data-parallel size {dp}"
        )
    if config.data.batch_size % jax.process_count():
        raise ConfigError(
            f"data.batch_size: {config.data.batch_size} is not divisible by the process count {jax.process_count()}"
        )


def build_trainer(config: Config, token_bytes: np.ndarray, mesh=None, token_chars: np.ndarray | None = None) -> Trainer:
    mesh = mesh if mesh is not None else make_mesh(config.mesh)
    check_parallelism(config, mesh)
    rules = STRATEGIES[config.mesh.strategy]
    graphdef, abstract_params = nnx.split(nnx.eval_shape(lambda: seeded_model(config)))
    tx, schedule = make_optimizer(config.optim, config.train.steps, abstract_params)
    init_state = functools.partial(init_train_state, config, tx)
    abstract_state = jax.eval_shape(init_state)
    shardings = tree_shardings(abstract_state, mesh, rules)
    replicated = NamedSharding(mesh, PartitionSpec())
    data_sharding = batch_sharding(mesh, rules)
    train_step = jax.jit(
        with_activation_sharding(make_train_step(graphdef, tx, schedule, config), mesh, rules),
        in_shardings=(shardings, data_sharding),
        out_shardings=(shardings, replicated),
        donate_argnums=0,
    )
    eval_step = jax.jit(
        with_activation_sharding(
            make_eval_step(graphdef, jnp.asarray(token_bytes, jnp.int32),
                           None if token_chars is None else jnp.asarray(token_chars, jnp.int32), config=config),
            mesh, rules),
        in_shardings=(shardings.params, data_sharding),
        out_shardings=replicated,
    )
    return Trainer(
        config=config,
        mesh=mesh,
        graphdef=graphdef,
        abstract_state=abstract_state,
        state_shardings=shardings,
        batch_sharding=data_sharding,
        train_step=train_step,
        eval_step=eval_step,
        init_state=jax.jit(init_state, out_shardings=shardings),
    )


def to_global(batch: dict, sharding: NamedSharding) -> dict:
    """Assemble the global batch from this process's local rows."""
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()}


def _meta(config: Config, data, step: int) -> dict:
    return {
        "step": int(step),
        "config": config.to_dict(),
        "tokenizer_fingerprint": data.tokenizer.fingerprint,
        "corpus_fingerprint": data.corpus_fingerprint,
        "lmx_version": __version__,
    }


def check_tokenizer_fingerprint(meta: dict, fingerprint: str, what: str = "restore") -> None:
    saved = meta.get("tokenizer_fingerprint")
    if saved is not None and saved != fingerprint:
        raise CheckpointError(
            f"{what}: tokenizer fingerprint {fingerprint[:16]} differs from the checkpoint's {saved[:16]}"
        )


def _versions() -> dict:
    return {
        "lmx": __version__,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "orbax": orbax.checkpoint.__version__,
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "processes": jax.process_count(),
    }


def train(
    config: Config,
    run_dir: str | Path | None = None,
    resume: bool = False,
    force: bool = False,
    show_progress: bool = True,
    console=None,
    force_tokenizer: bool = False,
    hooks: Sequence[Hook] = (),
) -> dict:
    """Train `config` into `run_dir`; returns the summary dict also written to summary.json.

    Everything that can be checked is checked before the run directory is created or changed: devices,
    mesh, batch divisibility, free space, the directory itself, the corpus and the tokenizer. The
    directory is then locked (RunLock) for as long as this call runs.

    SIGTERM/SIGINT save a checkpoint at the next step boundary and return normally (summary
    `status: "preempted"`); `lmx train --resume` continues from there. `hooks` (lmx.train.hooks)
    run after the built-in ones at each step where they are due, before the preemption check.
    """
    wall_start = time.monotonic()
    run_dir = Path(run_dir) if run_dir else default_run_dir(config)
    mesh = make_mesh(config.mesh)
    check_parallelism(config, mesh)
    check_config_agreement(config)
    check_free_space(run_dir, checkpoint_bytes(config), config.train.keep_checkpoints)
    on_process_zero(lambda: check_run_dir(run_dir, config, resume=resume, force=force))
    lock = RunLock(run_dir)
    # a run directory that has a lock file is locked at once, so a second process is refused before any work
    # (creating one waits until the input is validated: a refused command writes nothing)
    on_process_zero(lambda: lock.acquire() if lock.path.is_file() else None)
    try:
        log = TrainProgress(config.train.steps, 0, console=console, enabled=show_progress)
        data = prepare_data(config, log=log.message)
        trainer = build_trainer(config, data.tokenizer.token_bytes, mesh=mesh,
                                token_chars=data.tokenizer.token_chars)

        def open_run_dir():  # the first write to run_dir: everything above only read and checked
            if not lock.held:
                lock.acquire()
            prepare_run_dir(run_dir, config, resume=resume, force=force)

        on_process_zero(open_run_dir)
        return _train_locked(config, run_dir, resume, show_progress, console, force_tokenizer, hooks, data,
                             trainer, log, wall_start)
    finally:
        lock.release()


def _train_locked(config: Config, run_dir: Path, resume: bool, show_progress: bool, console, force_tokenizer: bool,
                  hooks: Sequence[Hook], data, trainer: Trainer, log: TrainProgress, wall_start: float) -> dict:
    """`train` once the run directory is checked, prepared and locked."""
    checkpointer = Checkpointer(
        run_dir / "checkpoints", keep=config.train.keep_checkpoints, async_save=config.train.async_checkpointing
    )
    checkpointer.continue_hint = f"continue with: lmx train --resume --run-dir {run_dir}"
    iterator = data.train_iterator(config.data.shuffle_seed, jax.process_index(), jax.process_count())
    start_step = 0
    if resume and checkpointer.latest_step() is not None:
        abstract = abstract_with_shardings(trainer.abstract_state, trainer.state_shardings)
        start_step, state, data_state, meta = checkpointer.restore(abstract, fallback=True)
        if not force_tokenizer:
            check_tokenizer_fingerprint(meta, data.tokenizer.fingerprint, "--resume")
        iterator.set_state(iterator_state_at(data_state, config.data))
        if checkpointer.skipped:
            _set_aside_damaged(checkpointer, start_step)
        log.message(f"resumed {run_dir} at step {start_step}")
    else:
        state = trainer.init_state()
    if jax.process_index() == 0:
        data.tokenizer.save(run_dir / "tokenizer")
    valid = [to_global(b, trainer.batch_sharding) for b in data.valid_batches(
        config.train.eval_batches, jax.process_index(), jax.process_count())]
    writer = MetricsWriter(run_dir, truncate_after_step=start_step) if jax.process_index() == 0 else None
    log.close()

    guard = PreemptionGuard(config.train.preemption_grace_seconds)
    loop = TrainLoop(config, trainer, data, checkpointer, writer, run_dir, valid, iterator,
                     standard_hooks(config, guard, extra=hooks))
    try:
        with guard:
            state = loop.run(state, start_step, show_progress, console)
    except BaseException:
        loop.progress_close()  # the first error is the one to report: closing must not replace it
        with contextlib.suppress(Exception):
            checkpointer.close()
        if writer:
            writer.close(quiet=True)
        raise
    loop.progress_close()
    try:
        checkpointer.close()  # raises CheckpointError naming the step if the last background save failed
    except BaseException:
        if writer:
            writer.close(quiet=True)
        raise
    if writer:
        writer.close()
    loop.end(state)  # the hooks' end work: the final evaluation if none ran, the greedy samples

    summary = _summary(config, data, loop, loop.eval_result, loop.samples, run_dir,
                       start_step if resume else None, time.monotonic() - wall_start)
    if jax.process_index() == 0:
        tmp = run_dir / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2, default=str))
        os.replace(tmp, run_dir / "summary.json")
    return summary


def _set_aside_damaged(checkpointer: Checkpointer, start_step: int) -> None:
    """After resuming from an older step: say so in one line, and rename the damaged newer steps
    (checkpoints/STEP -> STEP.damaged) so the run can save those steps again; the bytes stay for a look."""
    skipped = checkpointer.skipped
    steps = ", ".join(str(step) for step, _ in skipped)
    reasons = "; ".join(f"step {step}: {reason}" for step, reason in skipped)
    warnings.warn(f"checkpoint{'s' if len(skipped) > 1 else ''} {steps} in {checkpointer.directory} "
                  f"failed verification ({reasons}); resuming from step {start_step}, the newest that verifies "
                  f"(the damaged ones are kept as STEP.damaged)", CheckpointNotice, stacklevel=3)

    def rename():
        for step, _ in skipped:
            source = checkpointer.directory / str(step)
            target = checkpointer.directory / f"{step}.damaged"
            n = 1
            while target.exists():
                n += 1
                target = checkpointer.directory / f"{step}.damaged{n}"
            if source.exists():
                source.rename(target)

    on_process_zero(rename)
    checkpointer.manager.reload()


class TrainLoop:
    """The step loop: fetch a batch, take a train step, run the hooks due at this step (lmx.train.hooks).

    Holds what the hooks share: the run's objects (config, trainer, data, checkpointer, writer,
    run_dir, valid batches, iterator) and the running results the summary reports (status,
    last_step, last_loss, skipped, throughput, eval_result, samples).
    """

    def __init__(self, config: Config, trainer: Trainer, data, checkpointer: Checkpointer, writer, run_dir: Path,
                 valid: list[dict], iterator, hooks: Sequence[Hook]):
        self.config, self.trainer, self.data = config, trainer, data
        self.checkpointer, self.writer, self.run_dir = checkpointer, writer, run_dir
        self.valid, self.iterator, self.hooks = valid, iterator, list(hooks)
        self.total_steps = config.train.steps
        self.eval_result: dict | None = None
        self.samples: list[dict] = []
        self.status = "completed"
        self.stopped = False
        self.saved_step: int | None = None
        self.last_step = 0
        self.last_loss = None
        self.skipped = 0
        self.timed_steps, self.timed_seconds = 0, 0.0
        self.tokens_per_step = config.data.batch_size * config.data.seq_len
        self.progress: TrainProgress | None = None

    def run(self, state: TrainState, start_step: int, show_progress: bool = False, console=None) -> TrainState:
        self.progress = TrainProgress(self.total_steps, start_step, console=console, enabled=show_progress)
        self.last_step = start_step
        for step in range(start_step, self.total_steps):
            batch = to_global(next(self.iterator), self.trainer.batch_sharding)
            t0 = time.monotonic()
            state, metrics = self.trainer.train_step(state, batch)
            metrics = jax.device_get(metrics)
            if step > start_step:  # the first step includes compilation
                self.timed_steps += 1
                self.timed_seconds += time.monotonic() - t0
            self.last_step = step + 1
            self.last_loss = float(metrics["loss"])
            event = StepEvent(step=step + 1, state=state, metrics=metrics, batch=batch,
                              last=step + 1 == self.total_steps)
            for hook in self.hooks:
                if hook.due(event):
                    hook(self, event)
            self.checkpointer.check()  # a background save that failed stops the run now, naming its step
            if self.stopped:
                break
        return state

    def end(self, state: TrainState) -> None:
        """Run each hook's `end` (after the loop, once the checkpointer and metrics file are closed)."""
        for hook in self.hooks:
            hook.end(self, state)

    # -- services for hooks --

    def log(self, step: int, values: dict, prefix: str = "") -> None:
        """One metrics.jsonl / TensorBoard row (process 0 only; elsewhere a no-op)."""
        if self.writer:
            self.writer.write(step, values, prefix)

    def evaluate(self, state: TrainState) -> dict:
        """loss, perplexity, bits per byte/char of `state.params` on the validation batches."""
        return evaluate(self.trainer.eval_step, state.params, self.valid)

    def save(self, step: int, state: TrainState) -> None:
        """Checkpoint `state` with the iterator state and run metadata (asynchronous when configured)."""
        position = data_position(self.iterator.get_state(), self.config.data)
        self.checkpointer.save(step, state, position, _meta(self.config, self.data, step))  # CheckpointError on failure
        self.saved_step = step

    def stop(self, status: str) -> None:
        """End the run after this step's hooks; `status` goes to the summary."""
        self.status, self.stopped = status, True

    def progress_close(self) -> None:
        if self.progress is not None:
            self.progress.close()

    def tokens_per_second(self) -> float | None:
        return self.tokens_per_step * self.timed_steps / self.timed_seconds if self.timed_seconds else None


def _summary(config: Config, data, loop: TrainLoop, eval_result: dict, samples: list, run_dir: Path,
             resumed_from, wall_seconds: float) -> dict:
    flops = flops_per_token(config.model, config.data.seq_len)
    tokens_seen = loop.last_step * loop.tokens_per_step
    return {
        "run_dir": str(run_dir),
        "status": loop.status,
        "steps": loop.last_step,
        "params": param_count(config.model),
        "params_non_embedding": param_count(config.model, include_embedding=False),
        "tokens_seen": tokens_seen,
        "flops_per_token_train": flops["training"],
        "train_flops": flops["training"] * tokens_seen,
        "final_train_loss": loop.last_loss,
        "val_loss": eval_result["loss"],
        "val_perplexity": eval_result["perplexity"],
        "val_bits_per_byte": eval_result["bits_per_byte"],
        "val_bits_per_char": eval_result["bits_per_char"],
        "tokens_per_second": loop.tokens_per_second(),
        "skipped_steps": loop.skipped,
        "wall_seconds": wall_seconds,
        "resumed_from": resumed_from,
        "corpus_fingerprint": data.corpus_fingerprint,
        "tokenizer_fingerprint": data.tokenizer.fingerprint,
        "data_stats": data.stats,
        "versions": _versions(),
        "samples": samples,
    }
