"""Where corpora meet tokenizers: the tokenizer of a corpus split (trained once, cached) and the
texts a tokenizer is trained or inspected on.

`get_tokenizer` trains a tokenizer once per (corpus split, kind, vocab_size, tokenizer_train_bytes,
special tokens, normalisation) and stores it under `<cache>/tokenizers/<key>/`; later calls load it
from there. `data.tokenizer = "file:PATH"` loads an existing tokenizer file instead (lmx.tokenizers.external).
lmx.tokenizers knows nothing of corpora (it trains on any iterable of texts); this module is the part
of lmx.data that feeds it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator

from lmx.config import DataConfig
from lmx.data.cache import atomic_directory, cache_key, cache_root
from lmx.data.corpus import Corpus, Document, load_corpus
from lmx.data.split import CorpusSplit, split_corpus
from lmx.errors import ConfigError
from lmx.tokenizers import (
    TOKENIZER_KINDS,
    Tokenizer,
    load_external,
    load_tokenizer,
    take_bytes,
    tokenizer_directory,
    train_tokenizer,
)
from lmx.tokenizers.external import FILE_PREFIX

CACHE_FORMAT = 1


def get_tokenizer(
    data_config: DataConfig,
    vocab_size: int,
    corpus: Corpus | CorpusSplit,
    cache_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> Tokenizer:
    """The tokenizer for this corpus split and settings: from the cache, or trained on the train split and cached."""
    kind = data_config.tokenizer
    options = {"special_tokens": tuple(data_config.special_tokens), "num_sentinels": data_config.num_sentinels,
               "normalization": data_config.normalization}
    if kind.startswith(FILE_PREFIX):
        for key, value in options.items():
            if value != DataConfig.__dataclass_fields__[key].default:
                raise ConfigError(
                    f"data.{key}: applies to tokenizers lmx trains, not to a file: tokenizer (leave it unset)"
                )
        directory = tokenizer_directory(kind)
        tok = load_tokenizer(directory) if directory is not None else load_external(kind)
        if tok.vocab_size > vocab_size:
            raise ConfigError(
                f"model.vocab_size: {vocab_size} is smaller than the {tok.vocab_size} ids of {kind[len(FILE_PREFIX):]!r}"
            )
        return tok
    if kind == "bytes":
        return train_tokenizer(kind, (), vocab_size, **options)
    split = corpus if isinstance(corpus, CorpusSplit) else split_corpus(corpus, data_config.valid_fraction)
    meta = {
        "format": CACHE_FORMAT,
        "split": split.key,
        "kind": kind,
        "vocab_size": vocab_size,
        "tokenizer_train_bytes": data_config.tokenizer_train_bytes,
    }
    meta.update({k: v for k, v in options.items() if v != DataConfig.__dataclass_fields__[k].default})
    entry = cache_root(data_config, cache_dir) / "tokenizers" / cache_key(meta)
    if (entry / TOKENIZER_KINDS[kind].definition_file).is_file():
        return load_tokenizer(entry)
    if log:
        log(
            f"training {kind} tokenizer (vocab {vocab_size}) on {data_config.tokenizer_train_bytes:,} bytes..."
        )
    tok = train_tokenizer(kind, _texts(split.train), vocab_size, data_config.tokenizer_train_bytes, **options)
    with atomic_directory(entry) as tmp:
        tok.save(tmp)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
    return load_tokenizer(entry)  # the cached copy, which may be a concurrent writer's identical result


def training_texts(files: Iterable[str], max_bytes: int) -> Iterator[str]:
    """The texts of the corpus specs `files` (files, directories or globs), or of the embedded stdlib
    corpus's train split when there are none, until `max_bytes` UTF-8 bytes (0: all)."""
    files = list(files)
    if files:
        docs = (doc.text for spec in files for doc in load_corpus(spec).documents)
    else:
        docs = (doc.text for doc in split_corpus(load_corpus("stdlib"), 0.02).train)
    return take_bytes(docs, max_bytes)


def stdlib_sample(sample_bytes: int) -> str:
    """The first `sample_bytes` UTF-8 bytes of the embedded stdlib corpus's validation split."""
    valid = split_corpus(load_corpus("stdlib"), 0.02).valid
    return "".join(take_bytes((d.text for d in valid), sample_bytes))


def _texts(documents: Iterable[Document]) -> Iterator[str]:
    return (doc.text for doc in documents)
