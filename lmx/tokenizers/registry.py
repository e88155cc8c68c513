"""Tokenizer registry (`data.tokenizer`), training, loading, and the on-disk tokenizer cache.

`get_tokenizer` trains a tokenizer once per (corpus split, kind, vocab_size, tokenizer_train_bytes,
special tokens, normalisation) and stores it under `<cache>/tokenizers/<key>/`; later calls load it
from there. `data.tokenizer = "file:PATH"` loads an existing tokenizer file instead (lmx.tokenizers.external).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from lmx import registry
from lmx.config import DataConfig
from lmx.data.cache import atomic_directory, cache_key, cache_root
from lmx.data.corpus import Corpus, Document, load_corpus
from lmx.data.split import CorpusSplit, split_corpus
from lmx.errors import ConfigError, DataError
from lmx.tokenizers.base import FINGERPRINT_FILE, KIND_FILE, Tokenizer
from lmx.tokenizers.byte_bpe import ByteBPETokenizer
from lmx.tokenizers.bytes import BytesTokenizer
from lmx.tokenizers.external import (
    FILE_PREFIX,
    ExternalHFTokenizer,
    SentencePieceTokenizer,
    TiktokenTokenizer,
    external_kind,
    load_external,
)
from lmx.tokenizers.subword import BPETokenizer, UnigramTokenizer, WordPieceTokenizer

# Kinds lmx trains (data.tokenizer values).
TOKENIZER_KINDS = registry.TOKENIZERS.register_all({
    "byte_bpe": ByteBPETokenizer,
    "bytes": BytesTokenizer,
    "bpe": BPETokenizer,
    "wordpiece": WordPieceTokenizer,
    "unigram": UnigramTokenizer,
})
# Kinds read from existing files (data.tokenizer = "file:PATH").
EXTERNAL_TOKENIZERS: dict[str, type[Tokenizer]] = {
    "hf_json": ExternalHFTokenizer,
    "tiktoken": TiktokenTokenizer,
    "sentencepiece": SentencePieceTokenizer,
}
ALL_KINDS = {**TOKENIZER_KINDS, **EXTERNAL_TOKENIZERS}
CACHE_FORMAT = 1


def train_tokenizer(
    kind: str,
    texts: Iterable[str],
    vocab_size: int,
    max_bytes: int = 0,
    special_tokens: Iterable[str] = (),
    num_sentinels: int = 0,
    normalization: str = "none",
) -> Tokenizer:
    """A new tokenizer of `kind` with at most `vocab_size` ids, trained on the first `max_bytes` of `texts`.

    `special_tokens` (e.g. ["<|mask|>"]) and `num_sentinels` sentinels follow <|eos|> <|pad|> <|bos|>;
    `normalization` is none, nfc or nfkc.
    """
    if kind not in TOKENIZER_KINDS:
        raise ConfigError(
            f"data.tokenizer: unknown value {kind!r}; choose one of {', '.join(TOKENIZER_KINDS)} or file:PATH"
        )
    registry.NORMALIZATIONS.check(normalization, "data.normalization")
    options = {"special_tokens": tuple(special_tokens), "num_sentinels": num_sentinels,
               "normalization": normalization}
    if kind == "bytes":
        tok = BytesTokenizer(**options)
        if vocab_size < tok.vocab_size:
            raise ConfigError(
                f"model.vocab_size: the bytes tokenizer needs vocab_size >= {tok.vocab_size}, got {vocab_size}"
            )
        return tok
    return TOKENIZER_KINDS[kind].train(take_bytes(texts, max_bytes), vocab_size, **options)


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
    """Read a tokenizer saved by `Tokenizer.save` from `directory` and check it against fingerprint.txt.

    kind.txt names the kind; directories written before it existed hold tokenizer.json (byte_bpe)
    or bytes.json (bytes).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"data.tokenizer: tokenizer directory {str(directory)!r} does not exist")
    kind_file = directory / KIND_FILE
    if kind_file.is_file():
        kind = kind_file.read_text(encoding="utf-8").strip()
        if kind not in ALL_KINDS:
            raise DataError(f"data.tokenizer: {str(kind_file)!r} names an unknown tokenizer kind {kind!r}")
        candidates = [ALL_KINDS[kind]]
    else:
        candidates = [ByteBPETokenizer, BytesTokenizer]
    for cls in candidates:
        path = directory / cls.definition_file
        if path.is_file():
            tok = cls.from_definition(path.read_text(encoding="utf-8"), str(path))
            break
    else:
        names = " or ".join(cls.definition_file for cls in candidates)
        raise DataError(f"data.tokenizer: {str(directory)!r} holds no {names} (not a directory written by "
                        "`lmx tokenizer train`); name a tokenizer file instead: file:PATH.json, .model or .tiktoken")
    stamp = directory / FINGERPRINT_FILE
    if stamp.is_file() and stamp.read_text(encoding="utf-8").strip() != tok.fingerprint:
        raise DataError(
            f"data.tokenizer: {str(path)!r} does not match its {FINGERPRINT_FILE} (corrupt cache? delete it)"
        )
    return tok


def load_any(spec: str) -> Tokenizer:
    """A tokenizer directory (lmx format) or an external tokenizer file (.json, .model, .tiktoken)."""
    return load_tokenizer(spec) if Path(spec).is_dir() else load_external(spec)


def training_texts(files: Iterable[str], max_bytes: int) -> Iterator[str]:
    """The texts of the corpus specs `files` (files, directories or globs), or of the embedded stdlib
    corpus's train split when there are none, until `max_bytes` UTF-8 bytes (0: all)."""
    files = list(files)
    if files:
        docs = (doc.text for spec in files for doc in load_corpus(spec).documents)
    else:
        docs = (doc.text for doc in split_corpus(load_corpus("stdlib"), 0.02).train)
    return take_bytes(docs, max_bytes)


def tokenizer_directory(setting: str) -> Path | None:
    """DIR of `file:DIR` when DIR is a directory: one written by `lmx tokenizer train` or a run's tokenizer/."""
    if not setting.startswith(FILE_PREFIX):
        return None
    path = Path(setting[len(FILE_PREFIX):]).expanduser()
    return path if path.is_dir() else None


def tokenizer_kind(setting: str) -> str:
    """The kind a data.tokenizer value produces: the value itself, the kind saved in a `file:DIR`
    tokenizer directory, or hf_json/sentencepiece/tiktoken for a `file:` tokenizer file."""
    directory = tokenizer_directory(setting)
    if directory is not None:
        return load_tokenizer(directory).kind
    return external_kind(setting) if setting.startswith(FILE_PREFIX) else setting


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


def _texts(documents: Iterable[Document]) -> Iterator[str]:
    return (doc.text for doc in documents)
