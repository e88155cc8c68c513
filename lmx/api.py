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


def load(run_dir, step: int | None = None) -> LoadedRun:
    """Read config.json and the tokenizer, restore the checkpoint at `step` (default: newest)."""
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
        trainer = build_trainer(config, tokenizer.token_bytes, token_chars=tokenizer.token_chars)
        abstract = abstract_with_shardings(trainer.abstract_state, trainer.state_shardings)
        restored_step, state, _, meta = checkpointer.restore(abstract, step=step)
    finally:
        checkpointer.close()
    check_tokenizer_fingerprint(meta, tokenizer.fingerprint, "lmx.load")
    model = nnx.merge(trainer.graphdef, state["params"])
    return LoadedRun(config=config, model=model, tokenizer=tokenizer, step=restored_step, meta=meta,
                     run_dir=run_dir)
