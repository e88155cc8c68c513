import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmx.config import DataConfig
from lmx.data import get_tokenizer, load_corpus
from lmx.errors import DataError
from lmx.tokenizers import Tokenizer, train_tokenizer
from lmx.tokenizers.byte_bpe import ByteBPETokenizer

TRAIN_TEXT = [
    "def add(a, b):\n    return a + b\n" * 20,
    "naïve café — ünïcödé ✓ 漢字 🎉 " * 10,
    "for i in range(10):\n    print(i)\n" * 20,
]


@pytest.fixture(scope="module")
def bpe():
    return train_tokenizer("byte_bpe", TRAIN_TEXT, 320)


@pytest.fixture(scope="module")
def byte_tok():
    return train_tokenizer("bytes", [], 4096)


@pytest.fixture(params=["byte_bpe", "bytes"])
def tok(request, bpe, byte_tok):
    return bpe if request.param == "byte_bpe" else byte_tok


def test_special_ids_are_fixed(bpe, byte_tok):
    assert (bpe.eos_id, bpe.pad_id, bpe.bos_id) == (0, 1, 2)
    assert (byte_tok.eos_id, byte_tok.pad_id, byte_tok.bos_id) == (256, 257, 258)
    assert byte_tok.vocab_size == 259
    assert 259 < bpe.vocab_size <= 320
    assert bpe.kind == "byte_bpe" and byte_tok.kind == "bytes"


@settings(max_examples=150, deadline=None)
@given(text=st.text())
def test_round_trip_and_byte_accounting(bpe, byte_tok, text):
    for tok in (bpe, byte_tok):
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert int(tok.token_bytes[np.asarray(ids, np.int64)].sum()) == len(text.encode("utf-8"))
        assert all(0 <= i < tok.vocab_size for i in ids)


def test_encode_batch_matches_encode(tok):
    texts = TRAIN_TEXT + ["", "x", "<|eos|> literal"]
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]
    assert [a.tolist() for a in tok.encode_arrays(texts)] == tok.encode_batch(texts)


def test_special_token_text_is_encoded_as_text(tok):
    ids = tok.encode("a<|eos|>b<|pad|>")
    assert tok.eos_id not in ids and tok.pad_id not in ids
    assert tok.decode(ids) == "a<|eos|>b<|pad|>"


def test_decode_skips_special_and_unknown_ids(tok):
    ids = tok.encode("hi")
    assert tok.decode([tok.bos_id, *ids, tok.eos_id, tok.pad_id, tok.vocab_size + 5]) == "hi"


def test_token_bytes_convention(tok):
    tb = tok.token_bytes
    assert tb.dtype == np.int32 and tb.shape == (tok.vocab_size,)
    assert (tb[tok.eos_id], tb[tok.pad_id], tb[tok.bos_id]) == (1, 0, 0)
    assert tb.min() >= 0


def test_fingerprint_stable_across_save_and_load(tok, tmp_path):
    tok.save(tmp_path / "t")
    loaded = Tokenizer.load(tmp_path / "t")
    assert type(loaded) is type(tok)
    assert loaded.fingerprint == tok.fingerprint
    assert loaded.encode("naïve 🎉 code") == tok.encode("naïve 🎉 code")
    assert np.array_equal(loaded.token_bytes, tok.token_bytes)


def test_fingerprint_changes_with_the_vocabulary(bpe, byte_tok):
    smaller = train_tokenizer("byte_bpe", TRAIN_TEXT, 300)
    assert smaller.fingerprint != bpe.fingerprint
    assert train_tokenizer("byte_bpe", TRAIN_TEXT, 320).fingerprint == bpe.fingerprint
    assert byte_tok.fingerprint != bpe.fingerprint


def test_load_errors(bpe, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        Tokenizer.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no tokenizer.json"):
        Tokenizer.load(tmp_path / "empty")
    bpe.save(tmp_path / "t")
    (tmp_path / "t" / "fingerprint.txt").write_text("0" * 64)
    with pytest.raises(DataError, match="does not match"):
        Tokenizer.load(tmp_path / "t")


def test_train_bytes_budget_limits_training_text():
    budgeted = train_tokenizer("byte_bpe", TRAIN_TEXT, 320, max_bytes=len(TRAIN_TEXT[0]))
    only_first = train_tokenizer("byte_bpe", TRAIN_TEXT[:1], 320)
    assert budgeted.fingerprint == only_first.fingerprint


def test_get_tokenizer_caches_by_corpus_and_settings(text_dir, tmp_path, monkeypatch):
    corpus = load_corpus(str(text_dir))
    config = DataConfig(corpus=str(text_dir), tokenizer_train_bytes=50_000)
    messages = []
    first = get_tokenizer(config, 300, corpus, tmp_path / "cache", log=messages.append)
    assert messages and "training" in messages[0]
    assert (tmp_path / "cache" / "tokenizers").is_dir()

    def no_training(*args, **kwargs):
        raise AssertionError("retrained despite a cache hit")

    monkeypatch.setattr(ByteBPETokenizer, "train", no_training)
    again = get_tokenizer(config, 300, corpus, tmp_path / "cache")
    assert again.fingerprint == first.fingerprint
    with pytest.raises(AssertionError, match="retrained"):
        get_tokenizer(config, 310, corpus, tmp_path / "cache")  # another vocab size is another entry
    assert get_tokenizer(DataConfig(tokenizer="bytes"), 300, corpus, tmp_path / "cache").kind == "bytes"
