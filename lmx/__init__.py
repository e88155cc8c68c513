"""lmx: a JAX/Flax research codebase for language-model scaling experiments.

    import lmx
    run = lmx.load("runs/default-20261125-120000")   # .config, .model (NNX), .tokenizer
    logits = run.model(tokens)
"""

__version__ = "0.1.0"

from lmx.config import Config, load_config  # noqa: E402
from lmx.errors import CheckpointError, ConfigError, DataError, LmxError, NonFiniteError  # noqa: E402


def load(run_dir, step=None):
    """Restore a run: returns an object with `.config`, `.model` (NNX module) and `.tokenizer`."""
    from lmx.api import load as _load

    return _load(run_dir, step)


__all__ = [
    "CheckpointError",
    "Config",
    "ConfigError",
    "DataError",
    "LmxError",
    "NonFiniteError",
    "load",
    "load_config",
]
