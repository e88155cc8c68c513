import numpy as np
import pytest

from lmx.data import load_corpus, split_corpus
from lmx.data import tokens as tokens_mod
from lmx.data.corpus import Document
from lmx.data.tokens import get_token_arrays, token_dtype, tokenize_documents
from lmx.tokenizers import train_tokenizer


@pytest.fixture(scope="module")
def byte_tok():
    return train_tokenizer("bytes", [], 259)


def test_token_dtype():
    assert token_dtype(4096) == np.uint16 and token_dtype(65535) == np.uint16
    assert token_dtype(65536) == np.uint32


def test_documents_are_concatenated_with_eos(byte_tok):
    docs = [Document("a", "hi"), Document("b", "é")]
    stream = tokenize_documents(byte_tok, docs)
    assert stream.dtype == np.uint16
    assert stream.tolist() == [104, 105, 256, 0xC3, 0xA9, 256]


def test_token_cache_is_built_once(text_dir, tmp_path, byte_tok, monkeypatch):
    split = split_corpus(load_corpus(str(text_dir)), 0.2)
    first = get_token_arrays(split, byte_tok, tmp_path)
    assert isinstance(first.train, np.memmap) and not first.train.flags.writeable
    stats = first.stats
    assert stats["train_docs"] == len(split.train) and stats["valid_docs"] == len(split.valid)
    assert stats["train_tokens"] == stats["train_bytes"] + stats["train_docs"]  # bytes + one EOS per doc
    assert int((first.valid == byte_tok.eos_id).sum()) == stats["valid_docs"]

    monkeypatch.setattr(
        tokens_mod, "tokenize_documents", lambda *a: pytest.fail("re-tokenized a cached split")
    )
    again = get_token_arrays(split, byte_tok, tmp_path)
    assert again.directory == first.directory
    assert np.array_equal(again.train, first.train) and again.stats == stats
    assert not list(first.directory.parent.glob(".*tmp*"))  # no temp directories left behind
