"""`lmx.load(run_dir, step=None)`: a trained run as Python objects for research scripts; `evaluate_run`
and `config_info`, what `lmx eval` and `lmx info` compute."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jax
from flax import nnx

from lmx.config import Config
from lmx.data import prepare_data
from lmx.errors import CheckpointError, ConfigError
from lmx.eval import evaluate
from lmx.nn import flops_per_token, param_count
from lmx.parallel.mesh import resolve_mesh_shape
from lmx.parallel.report import attention_kernel
from lmx.tokenizers import Tokenizer
from lmx.train.checkpoint import Checkpointer, abstract_with_shardings
from lmx.train.loop import build_trainer, check_tokenizer_fingerprint, to_global
from lmx.train.run_dir import read_run_config


@dataclass
class LoadedRun:
    config: Config
    model: nnx.Module
    tokenizer: Tokenizer
    step: int
    meta: dict
    run_dir: Path


def config_for_these_devices(config: Config) -> Config:
    """The run's config, with its mesh replaced by data parallelism over the available devices when
    the saved `mesh.shape` does not fit them (checkpoints restore into any mesh)."""
    try:
        resolve_mesh_shape(config.mesh.shape, jax.device_count())
        return config
    except ConfigError:
        return config.replace(**{"mesh.shape": {"data": -1}, "mesh.strategy": "dp"})


def load(run_dir, step: int | None = None, force_tokenizer: bool = False) -> LoadedRun:
    """Read config.json and the tokenizer, restore the parameters of the checkpoint at `step`
    (default: the newest one) and verify them against its checksums; the optimizer state stays on disk.

    A checkpoint that cannot be read or does not verify is a CheckpointError naming it and the array
    (the newest one too: name an earlier `step` to use that). Takes no lock: it can read a run that is
    still training. The parameters are restored into the run's mesh, or into data parallelism over
    this machine's devices when the run's `mesh.shape` does not fit them.
    """
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    tokenizer = Tokenizer.load(run_dir / "tokenizer")
    checkpoints = run_dir / "checkpoints"
    if not checkpoints.is_dir():
        raise CheckpointError(f"--run: {run_dir} has no checkpoints/ directory")
    checkpointer = Checkpointer(checkpoints, keep=config.train.keep_checkpoints, async_save=False, writer=False)
    try:
        if checkpointer.latest_step() is None:
            raise CheckpointError(f"--run: {run_dir} has no finished checkpoint")
        trainer = build_trainer(config_for_these_devices(config), tokenizer.token_bytes,
                                token_chars=tokenizer.token_chars)
        abstract = abstract_with_shardings(trainer.abstract_state.params, trainer.state_shardings.params)
        restored_step, params, meta = checkpointer.restore_params(abstract, step=step)  # no optimizer state
    finally:
        checkpointer.close()
    if not force_tokenizer:
        check_tokenizer_fingerprint(meta, tokenizer.fingerprint, "lmx.load")
    model = nnx.merge(trainer.graphdef, params)
    return LoadedRun(config=config, model=model, tokenizer=tokenizer, step=restored_step, meta=meta,
                     run_dir=run_dir)


def evaluate_run(run: LoadedRun, batches: int | None = None) -> dict:
    """Validation loss, perplexity, bits per byte and bits per character of a loaded run (`load`) on
    `batches` batches (default: train.eval_batches) of its config's validation split, on this
    machine's devices (`config_for_these_devices`): the dict of `lmx.eval.evaluate`."""
    config = config_for_these_devices(run.config)
    data = prepare_data(config, tokenizer=run.tokenizer)
    trainer = build_trainer(config, run.tokenizer.token_bytes, token_chars=run.tokenizer.token_chars)
    params = jax.device_put(nnx.state(run.model), trainer.state_shardings["params"])
    if batches is not None and batches < 1:
        raise ConfigError(f"--batches: must be >= 1, got {batches}")
    valid = [to_global(b, trainer.batch_sharding)
             for b in data.valid_batches(config.train.eval_batches if batches is None else batches,
                                         jax.process_index(), jax.process_count())]
    return evaluate(trainer.eval_step, params, valid)


def config_info(config: Config) -> dict:
    """Parameter counts, FLOPs per token and derived sizes of `config`, and the attention kernel its
    model.attention_impl runs on this machine (what `lmx info` prints)."""
    model = config.model
    flops = flops_per_token(model, config.data.seq_len)
    info = {
        "config": config.name,
        "params": param_count(model),
        "params_non_embedding": param_count(model, include_embedding=False),
        "flops_per_token_forward": flops["forward"],
        "flops_per_token_training": flops["training"],
        "d_model": model.d_model,
        "n_layers": model.n_layers,
        "n_heads": model.n_heads,
        "n_kv_heads": model.n_kv_heads,
        "head_dim": model.resolved_head_dim,
        "d_ff": model.resolved_d_ff,
        "vocab_size": model.vocab_size,
        "seq_len": config.data.seq_len,
        "tokens_per_step": config.data.batch_size * config.data.seq_len,
    }
    info["attention_kernel"] = attention_kernel(config)  # what model.attention_impl runs on this machine
    return info
