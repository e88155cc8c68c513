"""lmx: a JAX/Flax research codebase for language-model scaling experiments.

    import lmx
    run = lmx.load("runs/default-20261125-120000")   # .config, .model (NNX), .tokenizer
    logits = run.model(tokens)
    texts = lmx.generate(run, ["def fib(n):"], max_new_tokens=64, temperature=0.8, top_p=0.95)
"""

# The packages that fill the registries (lmx.registry) load first, so every config can be validated.
from lmx import data, nn, tokenizers  # noqa: F401
from lmx.config import Config, load_config
from lmx.decode import generate as _generate
from lmx.errors import CheckpointError, ConfigError, DataError, LmxError, NonFiniteError
from lmx.parallel import rules as _rules  # noqa: F401
from lmx.train import optimizer as _optimizer  # noqa: F401
from lmx.version import __version__  # noqa: F401


def load(run_dir, step=None):
    """Restore a run: returns an object with `.config`, `.model` (NNX module) and `.tokenizer`."""
    # lmx.api loads the training stack, and with it grain (lmx.data.prepare): imported on first use so
    # that `import lmx` (and so lmx.tokenizers, lmx.decode) works where grain is not installed
    from lmx.api import load as _load

    return _load(run_dir, step)


def generate(run, prompts, **options):
    """Generate from a loaded run (`lmx.load`): a list of `lmx.decode.Completion` (options as in
    `lmx.decode.generate`: max_new_tokens, temperature, top_k, top_p, min_p, penalties, stop, beams, ...)."""
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
