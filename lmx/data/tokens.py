"""Token cache: each split tokenized once into a flat .npy array, every document followed by EOS.

Entries live under `<cache>/tokens/<key>/` (key: corpus split and tokenizer fingerprint) as
`train.npy`, `valid.npy` (uint16 when the vocabulary fits, else uint32) and `stats.json`; they are
opened as read-only memmaps.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from lmx.data.cache import atomic_directory, cache_key
from lmx.data.corpus import Document
from lmx.data.split import CorpusSplit
from lmx.errors import DataError
from lmx.tokenizers import Tokenizer

CACHE_FORMAT = 1
SPLITS = ("train", "valid")
_CHUNK_BYTES = 4 << 20  # text handed to one encode_batch call
_CHUNK_DOCS = 1024


@dataclasses.dataclass(frozen=True)
class TokenArrays:
    """Memory-mapped token streams of both splits plus their stats (docs, bytes, tokens per split)."""

    train: np.ndarray
    valid: np.ndarray
    stats: dict
    directory: Path


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 if every id fits, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 65535 else np.uint32)


def tokenize_documents(tokenizer: Tokenizer, documents: Sequence[Document]) -> np.ndarray:
    """All documents' ids concatenated, each followed by EOS, as one flat array of `token_dtype`."""
    dtype = token_dtype(tokenizer.vocab_size)
    eos = np.array([tokenizer.eos_id], dtype)
    pieces = []
    for chunk in _chunks(documents):
        for ids in tokenizer.encode_arrays([doc.text for doc in chunk], dtype=dtype):
            pieces.append(ids)
            pieces.append(eos)
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype)


def get_token_arrays(
    split: CorpusSplit,
    tokenizer: Tokenizer,
    cache_root: Path,
    log: Callable[[str], None] | None = None,
) -> TokenArrays:
    """Load the token streams of `split` from the cache, tokenizing and caching them first if needed."""
    meta = {"format": CACHE_FORMAT, "split": split.key, "tokenizer": tokenizer.fingerprint}
    entry = Path(cache_root) / "tokens" / cache_key(meta)
    if not (entry / "stats.json").is_file():
        _build(entry, meta, split, tokenizer, log)
    return _open(entry)


def _build(entry: Path, meta: dict, split: CorpusSplit, tokenizer: Tokenizer, log) -> None:
    docs = {"train": split.train, "valid": split.valid}
    stats = {}
    with atomic_directory(entry) as tmp:
        for name in SPLITS:
            if log:
                total = sum(d.nbytes for d in docs[name])
                log(f"tokenizing {name} split ({len(docs[name]):,} documents, {total / 1e6:.1f} MB)...")
            tokens = tokenize_documents(tokenizer, docs[name])
            np.save(tmp / f"{name}.npy", tokens)
            stats[f"{name}_docs"] = len(docs[name])
            stats[f"{name}_bytes"] = sum(d.nbytes for d in docs[name])
            stats[f"{name}_tokens"] = int(tokens.size)
        (tmp / "stats.json").write_text(
            json.dumps({"meta": meta, "stats": stats}, indent=2), encoding="utf-8"
        )


def _open(entry: Path) -> TokenArrays:
    try:
        stats = json.loads((entry / "stats.json").read_text(encoding="utf-8"))["stats"]
        arrays = {name: np.load(entry / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in SPLITS}
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(
            f"data.cache_dir: token cache {str(entry)!r} is unreadable ({exc}); delete it"
        ) from None
    for name in SPLITS:
        if arrays[name].ndim != 1 or arrays[name].size != stats[f"{name}_tokens"]:
            raise DataError(
                f"data.cache_dir: token cache {str(entry)!r} has a truncated {name}.npy; delete it"
            )
    return TokenArrays(arrays["train"], arrays["valid"], stats, entry)


def _chunks(documents: Sequence[Document]) -> Iterator[list[Document]]:
    chunk, size = [], 0
    for doc in documents:
        chunk.append(doc)
        size += len(doc.text)
        if size >= _CHUNK_BYTES or len(chunk) >= _CHUNK_DOCS:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk
