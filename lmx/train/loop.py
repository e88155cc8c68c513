"""The training loop: build everything from a Config, train, evaluate, checkpoint, summarise.

`train(config, run_dir, resume=False, force=False)` is what `lmx train` runs. Everything that can
be checked before a byte is written (devices, mesh, batch divisibility, run directory) is checked
first; a resumed run restores params, optimizer state, step, RNG and the data-iterator state, so it
continues with exactly the batches and losses of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

import lmx
from lmx.config import Config
from lmx.data import prepare_data
from lmx.decode import greedy_generate
from lmx.errors import CheckpointError, ConfigError, NonFiniteError
from lmx.eval import evaluate
from lmx.nn import Transformer, flops_per_token, param_count
from lmx.parallel import STRATEGIES, make_mesh
from lmx.parallel.shardings import batch_sharding, data_parallel_size, tree_shardings
from lmx.train.checkpoint import Checkpointer, abstract_with_shardings
from lmx.train.metrics import MetricsWriter
from lmx.train.optimizer import make_optimizer
from lmx.train.progress import TrainProgress
from lmx.train.run_dir import default_run_dir, prepare_run_dir
from lmx.train.step import make_eval_step, make_train_step


@dataclass
class Trainer:
    """Compiled steps and shardings for one config on one mesh (shared by train, eval and load)."""

    config: Config
    mesh: object
    graphdef: object
    abstract_state: dict
    state_shardings: dict
    batch_sharding: NamedSharding
    train_step: object
    eval_step: object
    init_state: object


def build_model(config: Config, seed: int | None = None) -> Transformer:
    return Transformer(config.model, rngs=nnx.Rngs(params=config.train.seed if seed is None else seed))


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


def build_trainer(config: Config, token_bytes: np.ndarray, mesh=None) -> Trainer:
    mesh = mesh if mesh is not None else make_mesh(config.mesh)
    check_parallelism(config, mesh)
    rules = STRATEGIES[config.mesh.strategy]
    graphdef, abstract_params = nnx.split(nnx.eval_shape(lambda: build_model(config)))
    tx, schedule = make_optimizer(config.optim, config.train.steps, abstract_params)

    def init_state():
        params = nnx.state(build_model(config))
        return {
            "params": params,
            "opt_state": tx.init(params),
            "step": jnp.zeros((), jnp.int32),
            "rng": jax.random.key_data(jax.random.key(config.train.seed + 1)),
            "skipped": jnp.zeros((), jnp.int32),
        }

    abstract_state = jax.eval_shape(init_state)
    shardings = tree_shardings(abstract_state, mesh, rules)
    replicated = NamedSharding(mesh, PartitionSpec())
    data_sharding = batch_sharding(mesh, rules)
    train_step = jax.jit(
        make_train_step(graphdef, tx, schedule, config),
        in_shardings=(shardings, data_sharding),
        out_shardings=(shardings, replicated),
        donate_argnums=0,
    )
    eval_step = jax.jit(
        make_eval_step(graphdef, jnp.asarray(token_bytes, jnp.int32)),
        in_shardings=(shardings["params"], data_sharding),
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
        "lmx_version": lmx.__version__,
    }


def check_tokenizer_fingerprint(meta: dict, fingerprint: str, what: str = "restore") -> None:
    saved = meta.get("tokenizer_fingerprint")
    if saved is not None and saved != fingerprint:
        raise CheckpointError(
            f"{what}: tokenizer fingerprint {fingerprint[:16]} differs from the checkpoint's {saved[:16]}"
        )


def _versions() -> dict:
    import flax
    import optax
    import orbax.checkpoint

    return {
        "lmx": lmx.__version__,
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
) -> dict:
    """Train `config` into `run_dir`; returns the summary dict also written to summary.json."""
    wall_start = time.monotonic()
    run_dir = Path(run_dir) if run_dir else default_run_dir(config)
    mesh = make_mesh(config.mesh)
    check_parallelism(config, mesh)
    if jax.process_index() == 0:
        prepare_run_dir(run_dir, config, resume=resume, force=force)
    progress_log = TrainProgress(config.train.steps, 0, console=console, enabled=show_progress)
    data = prepare_data(config, log=progress_log.message)
    trainer = build_trainer(config, data.tokenizer.token_bytes, mesh=mesh)
    checkpointer = Checkpointer(
        run_dir / "checkpoints", keep=config.train.keep_checkpoints, async_save=config.train.async_checkpointing
    )
    iterator = data.train_iterator(config.data.shuffle_seed, jax.process_index(), jax.process_count())
    start_step = 0
    if resume and checkpointer.latest_step() is not None:
        abstract = abstract_with_shardings(trainer.abstract_state, trainer.state_shardings)
        start_step, state, data_state, meta = checkpointer.restore(abstract)
        check_tokenizer_fingerprint(meta, data.tokenizer.fingerprint, "--resume")
        iterator.set_state(data_state)
        progress_log.message(f"resumed {run_dir} at step {start_step}")
    else:
        state = trainer.init_state()
    if jax.process_index() == 0:
        data.tokenizer.save(run_dir / "tokenizer")
    valid = [to_global(b, trainer.batch_sharding) for b in data.valid_batches(
        config.train.eval_batches, jax.process_index(), jax.process_count())]
    writer = MetricsWriter(run_dir, truncate_after_step=start_step) if jax.process_index() == 0 else None
    progress_log.close()

    total = config.train.steps
    tokens_per_step = config.data.batch_size * config.data.seq_len
    progress = TrainProgress(total, start_step, console=console, enabled=show_progress)
    eval_result, skipped, timed_steps, timed_seconds = None, 0, 0, 0.0
    try:
        for step in range(start_step, total):
            batch = to_global(next(iterator), trainer.batch_sharding)
            t0 = time.monotonic()
            state, metrics = trainer.train_step(state, batch)
            metrics = jax.device_get(metrics)
            elapsed = time.monotonic() - t0
            if step > start_step:  # the first step includes compilation
                timed_steps, timed_seconds = timed_steps + 1, timed_seconds + elapsed
            done = step + 1
            if not bool(metrics["finite"]):
                skipped += 1
                if config.train.nonfinite == "halt":
                    last = checkpointer.latest_step()
                    raise NonFiniteError(
                        f"train.nonfinite=halt: non-finite loss or gradient at step {done} (batch index {step}, "
                        f"loss={float(metrics['loss'])}); last good checkpoint: "
                        f"{'none' if last is None else f'step {last}'} in {run_dir / 'checkpoints'}"
                    )
            tps = tokens_per_step * timed_steps / timed_seconds if timed_seconds else 0.0
            eta = (total - done) * (timed_seconds / timed_steps) if timed_steps else 0.0
            progress.update(done, float(metrics["loss"]), tps, eta)
            if writer and (done % config.train.log_every == 0 or done == total or not metrics["finite"]):
                writer.write(done, {**{k: v for k, v in metrics.items() if k != "finite"},
                                    "tokens_per_second": tps, "skipped": skipped})
            if done % config.train.eval_every == 0 or done == total:
                eval_result = evaluate(trainer.eval_step, state["params"], valid)
                if writer:
                    writer.write(done, {k: eval_result[k] for k in ("loss", "perplexity", "bits_per_byte")}, "val_")
            if done % config.train.checkpoint_every == 0 or done == total:
                checkpointer.save(done, state, iterator.get_state(), _meta(config, data, done))
    finally:
        progress.close()
        checkpointer.close()
        if writer:
            writer.close()

    if eval_result is None:  # resumed a finished run: evaluate once more
        eval_result = evaluate(trainer.eval_step, state["params"], valid)
    model = nnx.merge(trainer.graphdef, state["params"])
    samples = []
    if config.eval.sample_prompts and config.eval.sample_tokens:
        continuations = greedy_generate(model, data.tokenizer, list(config.eval.sample_prompts),
                                        config.eval.sample_tokens, config.data.seq_len)
        samples = [{"prompt": p, "completion": c} for p, c in zip(config.eval.sample_prompts, continuations)]
    flops = flops_per_token(config.model, config.data.seq_len)
    tokens_seen = total * tokens_per_step
    summary = {
        "run_dir": str(run_dir),
        "steps": total,
        "params": param_count(config.model),
        "params_non_embedding": param_count(config.model, include_embedding=False),
        "tokens_seen": tokens_seen,
        "flops_per_token_train": flops["training"],
        "train_flops": flops["training"] * tokens_seen,
        "final_train_loss": float(metrics["loss"]) if total > start_step else None,
        "val_loss": eval_result["loss"],
        "val_perplexity": eval_result["perplexity"],
        "val_bits_per_byte": eval_result["bits_per_byte"],
        "tokens_per_second": tokens_per_step * timed_steps / timed_seconds if timed_seconds else None,
        "skipped_steps": skipped,
        "wall_seconds": time.monotonic() - wall_start,
        "resumed_from": start_step if resume else None,
        "corpus_fingerprint": data.corpus_fingerprint,
        "tokenizer_fingerprint": data.tokenizer.fingerprint,
        "data_stats": data.stats,
        "versions": _versions(),
        "samples": samples,
    }
    if jax.process_index() == 0:
        tmp = run_dir / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2, default=str))
        os.replace(tmp, run_dir / "summary.json")
    return summary
