"""Tokenizers: the `Tokenizer` interface, the kinds lmx trains (byte_bpe, bytes, bpe, wordpiece, unigram),
external tokenizer files, and the registry that trains, caches and loads them (see docs/tokenizers.md).

Modules: base (the interface), registry (kinds, training, loading, the on-disk cache), byte_bpe, bytes,
subword (bpe, wordpiece, unigram), hf_base (the Hugging Face `tokenizers` backend), external
(tokenizer.json / .model / .tiktoken files), stats (tokens per byte, char and word).
"""

from lmx.tokenizers.base import Tokenizer
from lmx.tokenizers.byte_bpe import ByteBPETokenizer
from lmx.tokenizers.bytes import BytesTokenizer
from lmx.tokenizers.external import load_external
from lmx.tokenizers.registry import (
    EXTERNAL_TOKENIZERS,
    TOKENIZER_KINDS,
    get_tokenizer,
    load_any,
    load_tokenizer,
    take_bytes,
    tokenizer_kind,
    train_tokenizer,
    training_texts,
)
from lmx.tokenizers.stats import stdlib_sample, text_stats
from lmx.tokenizers.subword import BPETokenizer, UnigramTokenizer, WordPieceTokenizer

__all__ = [
    "EXTERNAL_TOKENIZERS",
    "TOKENIZER_KINDS",
    "BPETokenizer",
    "ByteBPETokenizer",
    "BytesTokenizer",
    "Tokenizer",
    "UnigramTokenizer",
    "WordPieceTokenizer",
    "get_tokenizer",
    "load_any",
    "load_external",
    "load_tokenizer",
    "stdlib_sample",
    "take_bytes",
    "text_stats",
    "tokenizer_kind",
    "train_tokenizer",
    "training_texts",
]
