"""Tokenizer registry (`data.tokenizer`), training, loading, and the on-disk tokenizer cache.

`get_tokenizer` trains a tokenizer once per (corpus split, kind, vocab_size, tokenizer_train_bytes)
and stores it under `<cache>/tokenizers/<key>/`; later calls load it from there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from lmx.config import TOKENIZERS, DataConfig
from lmx.data.bpe_tokenizer import ByteBPETokenizer
from lmx.data.byte_tokenizer import BytesTokenizer
from lmx.data.cache import atomic_directory, cache_key, cache_root
from lmx.data.corpus import Corpus, Document
from lmx.data.split import CorpusSplit, split_corpus
from lmx.data.tokenizer_base import FINGERPRINT_FILE, Tokenizer
from lmx.errors import ConfigError, DataError

TOKENIZER_KINDS: dict[str, type[Tokenizer]] = {"byte_bpe": ByteBPETokenizer, "bytes": BytesTokenizer}
assert set(TOKENIZER_KINDS) == set(TOKENIZERS), "lmx.config.TOKENIZERS and the tokenizer registry disagree"
CACHE_FORMAT = 1


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int, max_bytes: int = 0) -> Tokenizer:
    """A new tokenizer of `kind` with at most `vocab_size` ids, trained on the first `max_bytes` of `texts`."""
    if kind not in TOKENIZER_KINDS:
        raise ConfigError(
            f"data.tokenizer: unknown value {kind!r}; choose one of {', '.join(TOKENIZER_KINDS)}"
        )
    if kind == "bytes":
        if vocab_size < 259:
            raise ConfigError(
                f"model.vocab_size: the bytes tokenizer needs vocab_size >= 259, got {vocab_size}"
            )
        return BytesTokenizer()
    return ByteBPETokenizer.train(take_bytes(texts, max_bytes), vocab_size)


def take_bytes(texts: Iterable[str], max_bytes: int) -> Iterator[str]:
    """The texts in order until `max_bytes` UTF-8 bytes (0: all); the last one is cut at a character boundary."""
    remaining = max_bytes
    for text in texts:
        if not max_bytes:
            yield text
            continue
        data = text.encode("utf-8")
        if len(data) >= remaining:
            head = data[:remaining].decode("utf-8", errors="ignore")
            if head:
                yield head
            return
        remaining -= len(data)
        yield text


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Read `tokenizer.json` or `bytes.json` from `directory` and check it against fingerprint.txt."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"data.tokenizer: tokenizer directory {str(directory)!r} does not exist")
    for cls in TOKENIZER_KINDS.values():
        path = directory / cls.definition_file
        if path.is_file():
            tok = cls.from_definition(path.read_text(encoding="utf-8"), str(path))
            break
    else:
        names = " or ".join(cls.definition_file for cls in TOKENIZER_KINDS.values())
        raise DataError(f"data.tokenizer: {str(directory)!r} holds no {names}")
    stamp = directory / FINGERPRINT_FILE
    if stamp.is_file() and stamp.read_text(encoding="utf-8").strip() != tok.fingerprint:
        raise DataError(
            f"data.tokenizer: {str(path)!r} does not match its {FINGERPRINT_FILE} (corrupt cache? delete it)"
        )
    return tok


def get_tokenizer(
    data_config: DataConfig,
    vocab_size: int,
    corpus: Corpus | CorpusSplit,
    cache_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> Tokenizer:
    """The tokenizer for this corpus split and settings: from the cache, or trained on the train split and cached."""
    kind = data_config.tokenizer
    if kind == "bytes":
        return train_tokenizer(kind, (), vocab_size)
    split = corpus if isinstance(corpus, CorpusSplit) else split_corpus(corpus, data_config.valid_fraction)
    meta = {
        "format": CACHE_FORMAT,
        "split": split.key,
        "kind": kind,
        "vocab_size": vocab_size,
        "tokenizer_train_bytes": data_config.tokenizer_train_bytes,
    }
    entry = cache_root(data_config, cache_dir) / "tokenizers" / cache_key(meta)
    if (entry / TOKENIZER_KINDS[kind].definition_file).is_file():
        return load_tokenizer(entry)
    if log:
        log(
            f"training {kind} tokenizer (vocab {vocab_size}) on {data_config.tokenizer_train_bytes:,} bytes..."
        )
    tok = train_tokenizer(kind, _texts(split.train), vocab_size, data_config.tokenizer_train_bytes)
    with atomic_directory(entry) as tmp:
        tok.save(tmp)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
    return load_tokenizer(entry)  # the cached copy, which may be a concurrent writer's identical result


def _texts(documents: Iterable[Document]) -> Iterator[str]:
    return (doc.text for doc in documents)
