"""`lmx.load(run_dir, step=None)`: a trained run as Python objects for research scripts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flax import nnx

from lmx.config import Config
from lmx.data.tokenizer import Tokenizer
from lmx.errors import CheckpointError
from lmx.train.checkpoint import Checkpointer, abstract_with_shardings
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
    import jax

    from lmx.errors import ConfigError
    from lmx.parallel.mesh import resolve_mesh_shape

    try:
        resolve_mesh_shape(config.mesh.shape, jax.device_count())
        return config
    except ConfigError:
        return config.replace(**{"mesh.shape": {"data": -1}, "mesh.strategy": "dp"})


def load(run_dir, step: int | None = None, force_tokenizer: bool = False) -> LoadedRun:
    """Read config.json and the tokenizer, restore the parameters of the checkpoint at `step`
    (default: the newest readable one); the optimizer state stays on disk.

    The parameters are restored into the run's mesh, or into data parallelism over this machine's
    devices when the run's `mesh.shape` does not fit them.
    """
    from lmx.train.loop import build_trainer, check_tokenizer_fingerprint

    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    tokenizer = Tokenizer.load(run_dir / "tokenizer")
    checkpoints = run_dir / "checkpoints"
    if not checkpoints.is_dir():
        raise CheckpointError(f"--run: {run_dir} has no checkpoints/ directory")
    checkpointer = Checkpointer(checkpoints, keep=config.train.keep_checkpoints, async_save=False)
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
