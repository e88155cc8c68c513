"""Ensembles: trials that differ only in `train.seed`, `optim.lr` or `model.init_std` train together
as one compiled program with a leading member axis (jax.vmap over parameters and optimizer state).

    summaries = train_ensemble([config_a, config_b, config_c], ["runs/a", "runs/b", "runs/c"])

The members share everything that is not an ensemble key: the data (prepared once; every member
sees the same batches), the model's shape, the schedule's shape, the steps and the periods of
logging, evaluation and checkpoints. Each member's run directory is a normal run directory
(config.json with its own config, tokenizer/, checkpoints/ with checksums, metrics.jsonl, events/,
summary.json with `"ensemble": {"size": n, "index": i}`), so `lmx.load`, `lmx eval --run` and even
`lmx train --resume` of one member alone read it unchanged. See docs/ensembles.md.

`python -m lmx.train.ensemble SPEC.json` is the entry point of the sweep runner (lmx.sweep), with
SPEC = {"members": [{"config": Config.to_dict(), "run_dir": str}, ...], "resume": bool}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from lmx.config import Config, flat_config
from lmx.data import prepare_data
from lmx.data.pipeline import data_position, iterator_state_at
from lmx.decode import generate
from lmx.errors import CheckpointError, ConfigError, LmxError, NonFiniteError
from lmx.eval.perplexity import summarize_eval_sums
from lmx.parallel import STRATEGIES, make_mesh
from lmx.parallel.activations import with_activation_sharding
from lmx.train.checkpoint import Checkpointer, CheckpointNotice, TreeMismatch, abstract_with_shardings
from lmx.train.diagnose import first_nonfinite_tensor
from lmx.train.ensemble_step import (
    init_members,
    make_ensemble_eval_step,
    make_ensemble_train_step,
    make_member_slicer,
    member_slice,
    stack_members,
    stacked_shardings,
)
from lmx.train.loop import (
    _meta,
    _summary,
    build_trainer,
    check_parallelism,
    check_tokenizer_fingerprint,
    to_global,
)
from lmx.train.metrics import MetricsWriter
from lmx.train.optimizer import make_optimizer
from lmx.train.preemption import PreemptionGuard
from lmx.train.progress import TrainProgress
from lmx.train.run_dir import RunLock, check_free_space, check_run_dir, checkpoint_bytes, prepare_run_dir

ENSEMBLE_KEYS = ("train.seed", "optim.lr", "model.init_std")
"""The keys in which members may differ: data of the compiled program (a seed and a learning rate are
arguments; init_std only changes the initialisation, which runs before the shared step)."""
LOCATION_KEYS = ("name", "train.run_dir")
"""Keys that only say where a run is written; members may differ in them too."""

_VAL_KEYS = ("loss", "perplexity", "bits_per_byte", "bits_per_char")


# --- which configs can train together ------------------------------------------------------


def _shared_part(config: Config) -> str:
    flat = flat_config(config)
    return json.dumps({k: v for k, v in flat.items() if k not in ENSEMBLE_KEYS + LOCATION_KEYS}, sort_keys=True)


def ensemble_groups(configs: Sequence[Config]) -> list[list[int]]:
    """Indices of `configs` that can train as one ensemble: equal once the ensemble keys (ENSEMBLE_KEYS)
    and the run-location keys (LOCATION_KEYS) are removed. Groups in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, config in enumerate(configs):
        groups.setdefault(_shared_part(config), []).append(i)
    return list(groups.values())


def check_ensemble(configs: Sequence[Config]) -> None:
    """ConfigError (one line, naming the first differing key) unless `configs` can train as one ensemble."""
    if not configs:
        raise ConfigError("ensemble: no members")
    first = flat_config(configs[0])
    for i, config in enumerate(configs[1:], start=1):
        flat = flat_config(config)
        for key in first:
            if key in ENSEMBLE_KEYS + LOCATION_KEYS or flat[key] == first[key]:
                continue
            raise ConfigError(
                f"{key}: ensemble members differ (member 0: {first[key]!r}, member {i}: {flat[key]!r}); members "
                f"may differ only in {', '.join(ENSEMBLE_KEYS)}")


# --- one member's bookkeeping -----------------------------------------------------------------


class Member:
    """One member's run: its directory, checkpointer, metrics writer and the running results the summary
    reports. Provides what `lmx.train.loop._summary` reads of a TrainLoop."""

    def __init__(self, index: int, config: Config, run_dir: Path, shared: _Timing):
        self.index, self.config, self.run_dir, self.shared = index, config, Path(run_dir), shared
        self.checkpointer: Checkpointer | None = None
        self.writer: MetricsWriter | None = None
        self.status = "completed"
        self.error: str | None = None
        self.last_step = 0
        self.last_loss = None
        self.skipped = 0
        self.eval_result: dict | None = None
        self.samples: list[dict] = []
        self.tokens_per_step = config.data.batch_size * config.data.seq_len

    @property
    def active(self) -> bool:
        return self.status == "completed"

    def tokens_per_second(self) -> float | None:
        """This member's training tokens per second (the ensemble trains n times as many)."""
        t = self.shared
        return self.tokens_per_step * t.steps / t.seconds if t.seconds else None

    def log(self, step: int, values: dict, prefix: str = "") -> None:
        if self.writer:
            self.writer.write(step, values, prefix)


class _Timing:
    def __init__(self):
        self.steps, self.seconds = 0, 0.0


# --- training -------------------------------------------------------------------------------------


def train_ensemble(configs: Sequence[Config], run_dirs: Sequence[str | Path], resume: bool = False,
                   show_progress: bool = False, console=None) -> list[dict]:
    """Train `configs` as one ensemble into `run_dirs` (one each); returns the members' summaries (also
    written to each RUN/summary.json).

    Everything is checked before a byte is written: that the configs form an ensemble
    (`check_ensemble`), devices and batch divisibility, free space, every run directory (as
    `lmx train` checks it: a directory holding another config is refused; one holding this config
    needs `resume`), the corpus and the tokenizer. The directories are then locked (RunLock) for as
    long as this call runs. `resume` restores every member from the newest step that all of them
    have and that verifies; checkpoint steps newer than that are set aside (damaged) or removed (a
    member that got further before the interruption: the resumed ensemble writes them again).
    """
    wall_start = time.monotonic()
    configs = list(configs)
    run_dirs = [Path(d) for d in run_dirs]
    if len(configs) != len(run_dirs):
        raise ConfigError(f"ensemble: {len(configs)} configs but {len(run_dirs)} run directories")
    check_ensemble(configs)
    seen: dict[Path, int] = {}
    for i, run_dir in enumerate(run_dirs):
        key = run_dir.absolute()
        if key in seen:
            raise ConfigError(f"ensemble: members {seen[key]} and {i} have the same run directory {run_dir}")
        seen[key] = i
    if jax.process_count() > 1:
        raise ConfigError(f"ensemble: trains in one process (this job has {jax.process_count()}); "
                          "train the members as separate runs")
    base = configs[0]
    mesh = make_mesh(base.mesh)
    check_parallelism(base, mesh)
    for config, run_dir in zip(configs, run_dirs):
        check_free_space(run_dir, checkpoint_bytes(config), config.train.keep_checkpoints)
        check_run_dir(run_dir, config, resume=resume, force=False)
    locks = [RunLock(run_dir) for run_dir in run_dirs]
    try:
        for lock in locks:  # a directory with a lock file: refuse a second process before any work
            if lock.path.is_file():
                lock.acquire()
        log = TrainProgress(base.train.steps, 0, console=console, enabled=show_progress)
        data = prepare_data(base, log=log.message)
        trainer = build_trainer(base, data.tokenizer.token_bytes, mesh=mesh, token_chars=data.tokenizer.token_chars)
        for lock, config, run_dir in zip(locks, configs, run_dirs):  # the first writes
            if not lock.held:
                lock.acquire()
            prepare_run_dir(run_dir, config, resume=resume, force=False)
        return _train_locked(configs, run_dirs, resume, show_progress, console, data, trainer, log, wall_start)
    finally:
        for lock in locks:
            lock.release()


def _train_locked(configs, run_dirs, resume, show_progress, console, data, trainer, log, wall_start) -> list[dict]:
    base = configs[0]
    n = len(configs)
    rules = STRATEGIES[base.mesh.strategy]
    mesh = trainer.mesh
    shardings = stacked_shardings(trainer.state_shardings)
    replicated = NamedSharding(mesh, PartitionSpec())
    abstract_params = trainer.abstract_state.params
    step_fn = jax.jit(
        with_activation_sharding(make_ensemble_train_step(trainer.graphdef, abstract_params, base), mesh, rules),
        in_shardings=(shardings, replicated, trainer.batch_sharding),
        out_shardings=(shardings, replicated),
        donate_argnums=0,
    )
    eval_fn = jax.jit(
        with_activation_sharding(
            make_ensemble_eval_step(trainer.graphdef, jnp.asarray(data.tokenizer.token_bytes, jnp.int32),
                                    None if data.tokenizer.token_chars is None
                                    else jnp.asarray(data.tokenizer.token_chars, jnp.int32), base),
            mesh, rules),
        in_shardings=(shardings.params, trainer.batch_sharding),
        out_shardings=replicated,
    )
    peak_lrs = jax.device_put(np.asarray([c.optim.lr for c in configs], np.float32), replicated)

    timing = _Timing()
    members = [Member(i, c, d, timing) for i, (c, d) in enumerate(zip(configs, run_dirs))]
    for m in members:
        m.checkpointer = Checkpointer(m.run_dir / "checkpoints", keep=m.config.train.keep_checkpoints,
                                      async_save=m.config.train.async_checkpointing)
        m.checkpointer.continue_hint = "continue the ensemble with resume=True"
    try:
        iterator = data.train_iterator(base.data.shuffle_seed, 0, 1)
        start_step, state = 0, None
        if resume:
            abstract = abstract_with_shardings(trainer.abstract_state, trainer.state_shardings)
            restored = _restore_members(members, abstract, data)
            if restored is not None:
                start_step, states, data_state = restored
                state = stack_members(states, shardings)
                iterator.set_state(iterator_state_at(data_state, base.data))
                log.message(f"resumed the ensemble of {n} at step {start_step}")
        if state is None:
            tx, _ = make_optimizer(base.optim, base.train.steps, abstract_params)
            state = init_members(configs, tx, shardings)
        for m in members:
            data.tokenizer.save(m.run_dir / "tokenizer")
            m.writer = MetricsWriter(m.run_dir, truncate_after_step=start_step)
        valid = [to_global(b, trainer.batch_sharding) for b in data.valid_batches(base.train.eval_batches, 0, 1)]
        log.close()
        loop = _EnsembleLoop(base, trainer, data, members, iterator, valid, step_fn, eval_fn, peak_lrs, timing,
                             make_member_slicer(trainer.state_shardings))
        guard = PreemptionGuard(base.train.preemption_grace_seconds)
        progress = TrainProgress(base.train.steps, start_step, console=console, enabled=show_progress)
        try:
            with guard:
                state = loop.run(state, start_step, guard, progress)
        finally:
            progress.close()
    except BaseException:
        for m in members:  # the first error is the one to report: closing must not replace it
            with contextlib.suppress(Exception):
                m.checkpointer.close()
            if m.writer:
                m.writer.close(quiet=True)
        raise
    failures = []
    for m in members:  # each raises CheckpointError naming the step if its last background save failed
        try:
            m.checkpointer.close()
        except BaseException as exc:
            failures.append(exc)
    if failures:
        for m in members:
            m.writer.close(quiet=True)
        raise failures[0]
    for m in members:
        m.writer.close()
    loop.end(state)

    wall = time.monotonic() - wall_start
    summaries = []
    for m in members:
        eval_result = m.eval_result or {k: None for k in _VAL_KEYS}
        summary = _summary(m.config, data, m, eval_result, m.samples, m.run_dir,
                           start_step if resume else None, wall)
        summary["ensemble"] = {"size": n, "index": m.index}
        if m.error:
            summary["error"] = m.error
        tmp = m.run_dir / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2, default=str))
        os.replace(tmp, m.run_dir / "summary.json")
        summaries.append(summary)
    return summaries


class _EnsembleLoop:
    """The step loop of an ensemble: batch -> vmapped step -> each member's due work (the built-in hooks
    of lmx.train.hooks, per member: non-finite policy, metrics rows, evaluation, checkpoints; the
    preemption check and the progress line once)."""

    def __init__(self, config, trainer, data, members, iterator, valid, step_fn, eval_fn, peak_lrs, timing, take):
        self.config, self.trainer, self.data, self.members = config, trainer, data, members
        self.take = take  # (stacked state, i) -> member i's TrainState, in a normal run's shardings
        self.iterator, self.valid, self.step_fn, self.eval_fn = iterator, valid, step_fn, eval_fn
        self.peak_lrs, self.timing = peak_lrs, timing
        self.saved_step: int | None = None

    def run(self, state, start_step: int, guard: PreemptionGuard, progress: TrainProgress):
        train = self.config.train
        total = train.steps
        for step in range(start_step, total):
            batch = to_global(next(self.iterator), self.trainer.batch_sharding)
            t0 = time.monotonic()
            state, metrics = self.step_fn(state, self.peak_lrs, batch)
            metrics = jax.device_get(metrics)
            if step > start_step:  # the first step includes compilation
                self.timing.steps += 1
                self.timing.seconds += time.monotonic() - t0
            done = step + 1
            last = done == total
            for m in self.members:
                if m.active:
                    self._after_step(m, done, state, member_slice(metrics, m.index), batch)
            active = [m for m in self.members if m.active]
            if active:
                losses = [m.last_loss for m in active]
                tps = self.timing.steps * self.members[0].tokens_per_step / self.timing.seconds \
                    if self.timing.seconds else 0.0
                eta = (total - done) * self.timing.seconds / self.timing.steps if self.timing.steps else 0.0
                progress.update(done, float(np.mean(losses)), tps * len(active), eta)
            if done % train.eval_every == 0 or last:
                self.evaluate(state, done)
            if done % train.checkpoint_every == 0 or last:
                self.save(done, state)
            for m in self.members:
                m.checkpointer.check()  # a background save that failed stops the run now, naming its step
            if not active:
                break
            if not last and guard.should_stop(done):
                if self.saved_step != done:
                    self.save(done, state)
                for m in active:
                    m.status = "preempted"
                print(f"lmx ensemble: {guard.signal_name}: saved checkpoints at step {done}; continue the "
                      f"ensemble with resume=True", file=sys.stderr, flush=True)
                break
        return state

    def _after_step(self, m: Member, step: int, state, metrics: dict, batch: dict) -> None:
        """The per-step hooks of one member, in lmx.train.hooks' order: non-finite policy, metrics row."""
        m.last_step = step
        m.last_loss = float(metrics["loss"])
        finite = bool(metrics["finite"])
        if not finite:
            m.skipped += 1
            if m.config.train.nonfinite == "halt":  # this member stops; the others go on
                params = self.take(state, m.index).params
                culprit = first_nonfinite_tensor(self.trainer.graphdef, params, batch, m.config)
                last_good = m.checkpointer.latest_step()
                m.status = "failed"
                m.error = str(NonFiniteError(
                    f"train.nonfinite=halt: non-finite loss or gradient at step {step} (batch index {step - 1}, "
                    f"loss={m.last_loss}); first non-finite tensor: {culprit}; last good checkpoint: "
                    f"{'none' if last_good is None else f'step {last_good}'} in {m.checkpointer.directory}"))
                print(f"lmx ensemble: member {m.index} ({m.run_dir}) stopped: {m.error}", file=sys.stderr,
                      flush=True)
                return
        if step % m.config.train.log_every == 0 or step == m.config.train.steps or not finite:
            m.log(step, {**{k: v for k, v in metrics.items() if k != "finite"},
                         "tokens_per_second": m.tokens_per_second() or 0.0, "skipped": m.skipped})

    def evaluate(self, state, step: int | None, members: list[Member] | None = None) -> None:
        """Validation loss, perplexity, bits per byte/char of `members` (default: the active ones; one
        vmapped eval step per batch), kept in `member.eval_result` and logged as `val_*` at `step` (None:
        not logged)."""
        members = [m for m in self.members if m.active] if members is None else members
        totals = np.zeros((len(self.members), 4))
        for batch in self.valid:
            sums = jax.device_get(self.eval_fn(state.params, batch))
            for j, key in enumerate(("nll", "tokens", "bytes", "chars")):
                if key in sums:
                    totals[:, j] += np.asarray(sums[key], np.float64)
        for m in members:  # float64 sums over the batches in order, as lmx.eval.evaluate adds Python floats
            m.eval_result = summarize_eval_sums(*(float(x) for x in totals[m.index]))
            if step is not None:
                m.log(step, {k: m.eval_result[k] for k in _VAL_KEYS}, "val_")

    def save(self, step: int, state) -> None:
        position = data_position(self.iterator.get_state(), self.config.data)
        for m in self.members:
            if m.active:
                m.checkpointer.save(step, self.take(state, m.index), position, _meta(m.config, self.data, step))
        self.saved_step = step

    def end(self, state) -> None:
        """After the loop: the final evaluation of a member stopped before its first one (preempted), then
        each completed member's greedy samples."""
        unevaluated = [m for m in self.members if m.status in ("completed", "preempted") and not m.eval_result]
        if unevaluated:
            self.evaluate(state, None, unevaluated)
        config = self.config
        if not (config.model.architecture.plain_decoder and config.eval.sample_prompts and config.eval.sample_tokens):
            return
        for m in self.members:
            if m.status != "completed":
                continue
            model = nnx.merge(self.trainer.graphdef, self.take(state, m.index).params)
            completions = generate(model, self.data.tokenizer, list(config.eval.sample_prompts),
                                   max_new_tokens=config.eval.sample_tokens, context_len=config.data.seq_len,
                                   temperature=0.0)
            m.samples = [{"prompt": c.prompt, "completion": c.text} for c in completions]


# --- resume ---------------------------------------------------------------------------------------


def _restore_members(members: list[Member], abstract, data):
    """(step, member states, data state) from the newest checkpoint step every member has and that
    verifies for every member, or None (no such step: start from step 0). Steps newer than the chosen
    one are set aside as STEP.damaged when they failed verification, else removed."""
    have = [set(m.checkpointer.steps()) for m in members]
    if not any(have):
        return None
    damaged: dict[int, dict[int, str]] = {m.index: {} for m in members}
    chosen = None
    for step in sorted(set.intersection(*have), reverse=True):
        restored = []
        for m in members:
            try:
                _, state, data_state, meta = m.checkpointer.restore(abstract, step=step, fallback=False)
            except TreeMismatch:
                raise
            except CheckpointError as exc:
                damaged[m.index][step] = str(exc)
                break
            check_tokenizer_fingerprint(meta, data.tokenizer.fingerprint, "ensemble resume")
            restored.append((state, data_state))
        else:
            positions = {json.dumps(d, sort_keys=True) for _, d in restored}
            if len(positions) > 1:
                raise CheckpointError(f"ensemble resume: the members' checkpoints of step {step} hold different "
                                      "data positions; they were not written by one ensemble")
            chosen = (step, [s for s, _ in restored], restored[0][1])
            break
    common = chosen[0] if chosen else 0
    notes = []
    for m in members:
        newer = [s for s in m.checkpointer.steps() if s > common]
        for step in newer:
            source = m.checkpointer.directory / str(step)
            if step in damaged[m.index]:
                target, k = m.checkpointer.directory / f"{step}.damaged", 1
                while target.exists():
                    k += 1
                    target = m.checkpointer.directory / f"{step}.damaged{k}"
                source.rename(target)
                notes.append(f"member {m.index} step {step} failed verification ({damaged[m.index][step]}; kept as "
                             f"{target.name})")
            else:
                shutil.rmtree(source)
        if newer:
            m.checkpointer.manager.reload()
    if chosen is None:
        notes.append("no checkpoint step is held and verified by every member; the ensemble starts again at "
                     "step 0")
    if notes or any(s > common for h in have for s in h):
        warnings.warn(f"ensemble resume from step {common}: " + "; ".join(
            notes or ["members that had saved newer steps before the interruption write them again"]),
            CheckpointNotice, stacklevel=3)
    return chosen


# --- entry point ----------------------------------------------------------------------------------


def read_spec(path: str | Path) -> tuple[list[Config], list[Path], bool]:
    """(configs, run directories, resume) of a SPEC.json (see the module docstring); ConfigError if malformed."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"ensemble spec: cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"ensemble spec: {path} is not valid JSON: {exc}") from None
    members = spec.get("members") if isinstance(spec, dict) else None
    if not isinstance(members, list) or not members:
        raise ConfigError(f"ensemble spec: {path} needs a non-empty list `members`")
    configs, run_dirs = [], []
    for i, member in enumerate(members):
        if not isinstance(member, dict) or not isinstance(member.get("config"), dict) \
                or not isinstance(member.get("run_dir"), str) or not member["run_dir"]:
            raise ConfigError(f"ensemble spec: member {i} needs `config` (a mapping) and `run_dir` (a path)")
        try:
            configs.append(Config.from_dict(member["config"]))
        except ConfigError as exc:
            raise ConfigError(f"ensemble spec: member {i}: {exc}") from None
        run_dirs.append(Path(member["run_dir"]))
    resume = spec.get("resume", False)
    if not isinstance(resume, bool):
        raise ConfigError(f"ensemble spec: `resume` must be true or false, got {resume!r}")
    return configs, run_dirs, resume


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m lmx.train.ensemble SPEC.json [--progress]`: 0 when every member completed (or was
    preempted and saved), 2 with one line on stderr for an error (LmxError) or for each member that failed."""
    parser = argparse.ArgumentParser(prog="python -m lmx.train.ensemble",
                                     description="Train the members of SPEC.json as one vmapped ensemble.")
    parser.add_argument("spec", help='{"members": [{"config": {...}, "run_dir": "..."}], "resume": false}')
    parser.add_argument("--progress", action="store_true", help="show the progress bar / lines on stderr")
    args = parser.parse_args(argv)
    try:
        configs, run_dirs, resume = read_spec(args.spec)
        summaries = train_ensemble(configs, run_dirs, resume=resume, show_progress=args.progress)
    except LmxError as exc:
        print(f"lmx ensemble: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lmx ensemble: interrupted", file=sys.stderr)
        return 130
    failed = [s for s in summaries if s["status"] not in ("completed", "preempted")]
    for s in failed:
        print(f"lmx ensemble: error: member {s['ensemble']['index']} ({s['run_dir']}): "
              f"{' '.join(str(s.get('error')).split())}", file=sys.stderr)
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
