"""Data: corpora, tokenizers, token caches and grain input pipelines (see docs/data.md)."""

from lmx.data.cache import cache_root
from lmx.data.corpus import Corpus, Document, load_corpus
from lmx.data.external import load_external
from lmx.data.pipeline import make_train_iterator, valid_batches
from lmx.data.prepare import PreparedData, prepare_data
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
