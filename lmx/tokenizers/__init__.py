"""Tokenizers: the `Tokenizer` interface, the kinds lmx trains (byte_bpe, bytes, bpe, wordpiece, unigram),
external tokenizer files, and the registry that trains and loads them (see docs/tokenizers.md).

Modules: base (the interface, loading a saved tokenizer), registry (kinds, training), byte_bpe, bytes,
subword (bpe, wordpiece, unigram), hf_base (the Hugging Face `tokenizers` backend), external
(tokenizer.json / .model / .tiktoken files), stats (tokens per byte, char and word).
lmx.tokenizers imports only lmx.registry and lmx.errors: the tokenizer of a corpus split (trained once,
cached) and the corpus texts to train on are lmx.data's (lmx/data/tokenizer_corpus.py).
"""

from lmx.tokenizers.base import Tokenizer
from lmx.tokenizers.byte_bpe import ByteBPETokenizer
from lmx.tokenizers.bytes import BytesTokenizer
from lmx.tokenizers.external import load_external
from lmx.tokenizers.registry import (
    EXTERNAL_TOKENIZERS,
    TOKENIZER_KINDS,
    load_any,
    load_tokenizer,
    take_bytes,
    tokenizer_directory,
    tokenizer_kind,
    train_tokenizer,
)
from lmx.tokenizers.stats import text_stats
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
    "load_any",
    "load_external",
    "load_tokenizer",
    "take_bytes",
    "text_stats",
    "tokenizer_directory",
    "tokenizer_kind",
    "train_tokenizer",
]
