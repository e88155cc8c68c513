"""`prepare_data`: corpus -> split -> tokenizer -> token cache, returning everything training needs."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import grain
import numpy as np

from lmx.config import Config, DataConfig
from lmx.data.cache import cache_root
from lmx.data.corpus import load_corpus
from lmx.data.objectives import make_objective
from lmx.data.pipeline import make_train_iterator, valid_batches
from lmx.data.split import split_corpus
from lmx.data.tokenizer_corpus import get_tokenizer
from lmx.data.tokens import get_token_arrays
from lmx.errors import ConfigError
from lmx.tokenizers import Tokenizer, tokenizer_kind


@dataclasses.dataclass(frozen=True)
class PreparedData:
    """The tokenizer, both token streams (memmaps) and their stats, with iterator factories."""

    config: DataConfig
    tokenizer: Tokenizer
    corpus_fingerprint: str
    train_tokens: np.ndarray
    valid_tokens: np.ndarray
    stats: dict
    objective_name: str = "causal_lm"  # lmx.data.objectives; from model.arch

    def objective(self):
        """The per-example objective for this run's architecture (None for the causal LM)."""
        if self.objective_name == "causal_lm":
            return None
        options = {
            "mlm": {"mask_rate": self.config.mlm_rate},
            "prefix_lm": {"prefix_fraction": self.config.prefix_fraction or None},
            "span_corruption": {"noise_density": self.config.noise_density,
                                "mean_span_length": self.config.mean_span_length},
        }[self.objective_name]
        return make_objective(self.objective_name, self.tokenizer, **options)

    def train_iterator(
        self, seed: int, process_index: int = 0, process_count: int = 1
    ) -> grain.DatasetIterator:
        """See `lmx.data.pipeline.make_train_iterator`."""
        return make_train_iterator(
            self.train_tokens,
            self.config,
            seed,
            process_index,
            process_count,
            eos_id=self.tokenizer.eos_id,
            pad_id=self.tokenizer.pad_id,
            objective=self.objective(),
        )

    def valid_batches(
        self, n: int, process_index: int = 0, process_count: int = 1
    ) -> list[dict[str, np.ndarray]]:
        """See `lmx.data.pipeline.valid_batches`."""
        return valid_batches(
            self.valid_tokens,
            self.config,
            n,
            process_index,
            process_count,
            eos_id=self.tokenizer.eos_id,
            pad_id=self.tokenizer.pad_id,
            objective=self.objective(),
        )


def prepare_data(
    config: Config,
    cache_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
    tokenizer: Tokenizer | None = None,
) -> PreparedData:
    """Load `config.data.corpus`, get the tokenizer (<= model.vocab_size ids) and the token caches.

    Prints nothing; progress messages go to `log` if given. `cache_dir` overrides data.cache_dir.
    A given `tokenizer` (e.g. a run's saved one) is used as is instead of the cached/trained one.
    """
    data = config.data
    say = log or (lambda message: None)
    say(f"reading corpus {data.corpus!r}...")
    corpus = load_corpus(data.corpus, data.max_corpus_bytes)
    split = split_corpus(corpus, data.valid_fraction)
    root = cache_root(data, cache_dir)
    if tokenizer is None:
        tokenizer = get_tokenizer(data, config.model.vocab_size, split, root, log=say)
    else:
        check_tokenizer(tokenizer, config)
    tokens = get_token_arrays(split, tokenizer, root, log=say)
    stats = {
        "corpus": corpus.spec,
        "corpus_fingerprint": corpus.fingerprint,
        "python_version": corpus.python_version,
        "docs": corpus.num_docs,
        "bytes": corpus.num_bytes,
        **tokens.stats,
        "tokenizer": tokenizer.kind,
        "tokenizer_fingerprint": tokenizer.fingerprint,
        "vocab_size": tokenizer.vocab_size,
        "token_cache": str(tokens.directory),
    }

    return PreparedData(data, tokenizer, corpus.fingerprint, tokens.train, tokens.valid, stats,
                        objective_name=config.model.architecture.objective)


def check_tokenizer(tokenizer: Tokenizer, config: Config) -> None:
    """A supplied tokenizer must be of kind data.tokenizer and fit in model.vocab_size."""
    if tokenizer.kind != tokenizer_kind(config.data.tokenizer):
        raise ConfigError(
            f"data.tokenizer: is {config.data.tokenizer!r} but the given tokenizer is {tokenizer.kind!r}"
        )
    if tokenizer.vocab_size > config.model.vocab_size:
        raise ConfigError(
            f"model.vocab_size: {config.model.vocab_size} is smaller than the tokenizer's {tokenizer.vocab_size} ids"
        )
