"""Data: corpora, the train/validation split, token caches and grain input pipelines (see docs/data.md).
Tokenizers are in lmx.tokenizers (a layer below lmx.data); the tokenizer of a corpus split is
`get_tokenizer` (lmx.data.tokenizer_corpus).

The grain-based parts (pipeline, prepare) load on first use, so tokenizers and corpora work where
grain is not installed (an inference-only environment, say)."""

import importlib

from lmx.data.cache import cache_root
from lmx.data.corpus import Corpus, Document, load_corpus
from lmx.data.split import CorpusSplit, split_corpus
from lmx.data.tokenizer_corpus import get_tokenizer, stdlib_sample, training_texts

__all__ = [
    "Corpus",
    "CorpusSplit",
    "Document",
    "PreparedData",
    "cache_root",
    "get_tokenizer",
    "load_corpus",
    "make_train_iterator",
    "prepare_data",
    "split_corpus",
    "stdlib_sample",
    "training_texts",
    "valid_batches",
]

_LAZY = {"make_train_iterator": "lmx.data.pipeline", "valid_batches": "lmx.data.pipeline",
         "PreparedData": "lmx.data.prepare", "prepare_data": "lmx.data.prepare"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lmx.data' has no attribute {name!r}")
