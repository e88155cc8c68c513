"""lmx: a JAX/Flax research codebase for language-model scaling experiments.

    import lmx
    run = lmx.load("runs/default-20261125-120000")   # .config, .model (NNX), .tokenizer
    logits = run.model(tokens)
    texts = lmx.generate(run, ["def fib(n):"], max_new_tokens=64, temperature=0.8, top_p=0.95)
"""

__version__ = "0.1.0"

# The packages that fill the registries (lmx.registry) load first, so every config can be validated.
from lmx import data, nn  # noqa: E402, F401
from lmx.config import Config, load_config  # noqa: E402
from lmx.errors import CheckpointError, ConfigError, DataError, LmxError, NonFiniteError  # noqa: E402
from lmx.parallel import rules as _rules  # noqa: E402, F401
from lmx.train import optimizer as _optimizer  # noqa: E402, F401


def load(run_dir, step=None):
    """Restore a run: returns an object with `.config`, `.model` (NNX module) and `.tokenizer`."""
    from lmx.api import load as _load

    return _load(run_dir, step)


def generate(run, prompts, **options):
    """Generate from a loaded run (`lmx.load`): a list of `lmx.decode.Completion` (options as in
    `lmx.decode.generate`: max_new_tokens, temperature, top_k, top_p, min_p, penalties, stop, beams, ...)."""
    from lmx.decode import generate as _generate

    return _generate(run.model, run.tokenizer, prompts, **options)


__all__ = [
    "CheckpointError",
    "Config",
    "ConfigError",
    "DataError",
    "LmxError",
    "NonFiniteError",
    "generate",
    "load",
    "load_config",
]
