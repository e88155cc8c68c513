"""Data: corpora, tokenizers, token caches and grain input pipelines (see docs/data.md).

The grain-based parts (pipeline, prepare) load on first use, so tokenizers and corpora work where
grain is not installed (an inference-only environment, say)."""

import importlib

from lmx.data.cache import cache_root
from lmx.data.corpus import Corpus, Document, load_corpus
from lmx.data.external import load_external
from lmx.data.split import CorpusSplit, split_corpus
from lmx.data.tokenizer import TOKENIZER_KINDS, get_tokenizer, load_tokenizer, train_tokenizer
from lmx.data.tokenizer_base import Tokenizer

__all__ = [
    "TOKENIZER_KINDS",
    "Corpus",
    "CorpusSplit",
    "Document",
    "PreparedData",
    "Tokenizer",
    "cache_root",
    "get_tokenizer",
    "load_corpus",
    "load_external",
    "load_tokenizer",
    "make_train_iterator",
    "prepare_data",
    "split_corpus",
    "train_tokenizer",
    "valid_batches",
]

_LAZY = {"make_train_iterator": "lmx.data.pipeline", "valid_batches": "lmx.data.pipeline",
         "PreparedData": "lmx.data.prepare", "prepare_data": "lmx.data.prepare"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lmx.data' has no attribute {name!r}")
