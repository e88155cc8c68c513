"""Hooks: the periodic work of the train loop, one small object per concern.

The loop (`lmx.train.loop.TrainLoop.run`) only fetches a batch, runs the train step and then runs,
in list order, every hook that is due at this step. Logging, evaluation, checkpoints, the
preemption check, the non-finite policy and the final samples are the built-in hooks below
(`standard_hooks`); a researcher adds one (a custom metric, a probe, an extra save) by passing it to
`train(config, run_dir, hooks=[...])`, without editing the loop.

Contract of a hook
------------------
- `due(event) -> bool`: whether it runs after this step. `Hook.due` is the period: `event.step` is a
  multiple of `every`, or, with `at_last`, it is the last step (`event.last`).
- `__call__(loop, event)`: the work, called after the train step that brought the state to
  `event.step`. `event` is a `StepEvent`:
    step      steps completed, 1-based (equals `int(event.state.step)`)
    state     the TrainState after this step, on device. Read it; do not keep its arrays past the
              call (copy what you need, e.g. `np.asarray`): the next train step donates their buffers.
    metrics   this step's metrics on the host: loss, z_loss, grad_norm, lr, tokens, finite
    batch     the global batch the step trained on
    last      whether `step == train.steps`
  `loop` (TrainLoop) gives `config`, `trainer`, `data`, `checkpointer`, `writer` (None on processes
  other than 0), `valid` (the validation batches) and the running counters (`skipped`, `last_loss`,
  `tokens_per_second()`, `eval_result`, `status`). `loop.log(step, values, prefix)` appends a
  metrics.jsonl / TensorBoard row (on process 0); `loop.save(step, state)` writes a checkpoint;
  `loop.stop(status)` ends the run once this step's hooks have run. A hook does not change the state.
- `end(loop, state)`: runs once after the loop has finished (completed or stopped early, not after
  an exception), once the checkpointer and the metrics file are closed, with the final state.

Hooks run on every process; a hook that writes files should do so on process 0 only
(`jax.process_index() == 0`), as `loop.log` does.

Built-in order (`standard_hooks`): NonFiniteCheck, Progress, LogMetrics, Evaluate, SaveCheckpoint,
the user's hooks, PreemptionCheck, Samples. Within a step that is the order of the side effects:
halt on a non-finite step first, then the progress line, the metrics row, the validation row, the
checkpoint, and last the preemption save (after every hook has seen the step).

Example, a custom metric every 10 steps:

    import optax
    from lmx.train.hooks import hook
    from lmx.train.loop import train

    @hook(every=10)
    def param_norm(loop, event):
        loop.log(event.step, {"param_norm": float(optax.global_norm(event.state.params))})

    train(config, run_dir="runs/x", hooks=[param_norm])
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flax import nnx

from lmx.config import Config
from lmx.decode import generate
from lmx.errors import NonFiniteError
from lmx.train.diagnose import first_nonfinite_tensor
from lmx.train.preemption import PreemptionGuard
from lmx.train.state import TrainState

if TYPE_CHECKING:  # for annotations only: lmx.train.loop imports this module to run the hooks
    from lmx.train.loop import TrainLoop


@dataclass(frozen=True)
class StepEvent:
    """What a hook sees after a train step (see the module docstring)."""

    step: int
    state: TrainState
    metrics: dict
    batch: dict
    last: bool


class Hook:
    """Base class: runs every `every` steps (and at the last step when `at_last`); override `__call__`
    and, for work after the loop, `end`."""

    every: int = 1
    at_last: bool = False

    def due(self, event: StepEvent) -> bool:
        return event.step % self.every == 0 or (self.at_last and event.last)

    def __call__(self, loop: TrainLoop, event: StepEvent) -> None:
        pass

    def end(self, loop: TrainLoop, state: TrainState) -> None:
        pass


class FunctionHook(Hook):
    """A function `fn(loop, event)` run at a period; made by `hook(every=...)`."""

    def __init__(self, fn: Callable[[TrainLoop, StepEvent], None], every: int = 1, at_last: bool = False):
        if every < 1:
            raise ValueError(f"hook {getattr(fn, '__name__', fn)}: every must be >= 1, got {every}")
        self.fn, self.every, self.at_last = fn, every, at_last

    def __call__(self, loop: TrainLoop, event: StepEvent) -> None:
        self.fn(loop, event)

    def __repr__(self) -> str:
        return f"FunctionHook({getattr(self.fn, '__name__', self.fn)}, every={self.every}, at_last={self.at_last})"


def hook(every: int = 1, at_last: bool = False):
    """Decorator: `@hook(every=10)` turns `fn(loop, event)` into a Hook run every 10 steps."""
    return lambda fn: FunctionHook(fn, every=every, at_last=at_last)


class NonFiniteCheck(Hook):
    """Every step: count a step whose loss or gradient was not finite (the step itself already dropped
    the update); under `train.nonfinite=halt` stop with the first non-finite tensor and the last good
    checkpoint named."""

    def __init__(self, policy: str):
        self.policy = policy

    def __call__(self, loop: TrainLoop, event: StepEvent) -> None:
        if bool(event.metrics["finite"]):
            return
        loop.skipped += 1
        if self.policy != "halt":
            return
        culprit = first_nonfinite_tensor(loop.trainer.graphdef, event.state.params, event.batch, loop.config)
        last = loop.checkpointer.latest_step()
        batch_index = event.step - 1
        raise NonFiniteError(
            f"train.nonfinite=halt: non-finite loss or gradient at step {event.step} (batch index {batch_index}, "
            f"loss={loop.last_loss}); first non-finite tensor: {culprit}; last good checkpoint: "
            f"{'none' if last is None else f'step {last}'} in {loop.checkpointer.directory}"
        )


class Progress(Hook):
    """Every step: the progress bar (or a plain line every 10 s off a terminal): loss, tokens/s, ETA."""

    def __call__(self, loop: TrainLoop, event: StepEvent) -> None:
        tps = loop.tokens_per_second() or 0.0
        eta = (loop.total_steps - event.step) * (loop.timed_seconds / loop.timed_steps) if loop.timed_steps else 0.0
        loop.progress.update(event.step, loop.last_loss, tps, eta)


class LogMetrics(Hook):
    """Every `train.log_every` steps, at the last step and at every non-finite step: one metrics row
    (loss, z_loss, grad_norm, lr, tokens, tokens_per_second, skipped)."""

    def __init__(self, every: int):
        self.every, self.at_last = every, True

    def due(self, event: StepEvent) -> bool:
        return super().due(event) or not bool(event.metrics["finite"])

    def __call__(self, loop: TrainLoop, event: StepEvent) -> None:
        if loop.writer:
            loop.writer.write(event.step, {**{k: v for k, v in event.metrics.items() if k != "finite"},
                                           "tokens_per_second": loop.tokens_per_second() or 0.0,
                                           "skipped": loop.skipped})


_VAL_KEYS = ("loss", "perplexity", "bits_per_byte", "bits_per_char")


class Evaluate(Hook):
    """Every `train.eval_every` steps and at the last step: loss, perplexity, bits per byte and per
    character on the validation batches, kept in `loop.eval_result` and logged as `val_*`. At the end,
    if no evaluation ran (a run stopped before its first one), evaluate the final state once."""

    def __init__(self, every: int):
        self.every, self.at_last = every, True

    def __call__(self, loop: TrainLoop, event: StepEvent) -> None:
        loop.eval_result = loop.evaluate(event.state)
        loop.log(event.step, {k: loop.eval_result[k] for k in _VAL_KEYS}, "val_")

    def end(self, loop: TrainLoop, state: TrainState) -> None:
        if not loop.eval_result:
            loop.eval_result = loop.evaluate(state)


class SaveCheckpoint(Hook):
    """Every `train.checkpoint_every` steps and at the last step: state, iterator state and metadata."""

    def __init__(self, every: int):
        self.every, self.at_last = every, True

    def __call__(self, loop: TrainLoop, event: StepEvent) -> None:
        loop.save(event.step, event.state)


class PreemptionCheck(Hook):
    """Every step but the last: after SIGTERM/SIGINT (or the multi-host preemption notice), save a
    checkpoint unless this step already has one, and stop the run with status `preempted`."""

    def __init__(self, guard: PreemptionGuard):
        self.guard = guard

    def due(self, event: StepEvent) -> bool:
        return not event.last

    def __call__(self, loop: TrainLoop, event: StepEvent) -> None:
        if not self.guard.should_stop(event.step):
            return
        if loop.saved_step != event.step:
            loop.save(event.step, event.state)
        loop.stop("preempted")
        print(f"lmx train: {self.guard.signal_name}: saved a checkpoint at step {event.step}; "
              f"continue with: lmx train --resume --run-dir {loop.run_dir}", file=sys.stderr, flush=True)


class Samples(Hook):
    """At the end of a completed decoder run: greedy completions of `eval.sample_prompts`
    (`eval.sample_tokens` new tokens each), kept in `loop.samples` for the summary."""

    def due(self, event: StepEvent) -> bool:
        return False

    def end(self, loop: TrainLoop, state: TrainState) -> None:
        config = loop.config
        if not (loop.status == "completed" and config.model.architecture.plain_decoder and config.eval.sample_prompts
                and config.eval.sample_tokens):
            return
        model = nnx.merge(loop.trainer.graphdef, state.params)
        completions = generate(model, loop.data.tokenizer, list(config.eval.sample_prompts),
                               max_new_tokens=config.eval.sample_tokens, context_len=config.data.seq_len,
                               temperature=0.0)
        loop.samples = [{"prompt": c.prompt, "completion": c.text} for c in completions]


def standard_hooks(config: Config, guard: PreemptionGuard, extra: Sequence[Hook] = ()) -> list[Hook]:
    """The hooks of `lmx train`, in order, with the user's `extra` hooks before the preemption check."""
    train = config.train
    return [
        NonFiniteCheck(train.nonfinite),
        Progress(),
        LogMetrics(train.log_every),
        Evaluate(train.eval_every),
        SaveCheckpoint(train.checkpoint_every),
        *extra,
        PreemptionCheck(guard),
        Samples(),
    ]
