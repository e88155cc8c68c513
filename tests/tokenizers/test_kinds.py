"""Every trained kind: round trip of arbitrary text, byte/char accounting, special tokens, normalisation,
and the fingerprint contract (changes with any merge, piece or special token, and only then)."""

import json
import unicodedata

import numpy as np
import pytest
import tokenizers
from hypothesis import given, settings
from hypothesis import strategies as st

from lmx.config import DataConfig
from lmx.data import get_tokenizer, load_corpus
from lmx.errors import ConfigError, DataError
from lmx.tokenizers import Tokenizer, train_tokenizer
from lmx.tokenizers.byte_bpe import ByteBPETokenizer
from lmx.tokenizers.subword import WORDPIECE_PREFIX

TRAIN_TEXT = [
    "def add(a, b):\n    return a + b\n" * 20,
    "naïve café — ünïcödé ✓ 漢字 🎉 " * 10,
    "for i in range(10):\n    print(i)  # ## comment ####\n" * 20,
    "class Point:\n\tx: int = 0\r\n\ty: int = 0\n" * 10,
]
KINDS = ("bytes", "byte_bpe", "bpe", "wordpiece", "unigram")
VOCAB = 640  # wordpiece needs 3 specials + unk + 512 byte symbols


@pytest.fixture(scope="module")
def toks():
    return {kind: train_tokenizer(kind, TRAIN_TEXT, VOCAB) for kind in KINDS}


@pytest.fixture(params=KINDS)
def tok(request, toks):
    return toks[request.param]


# Arbitrary Unicode (no surrogates: not encodable) biased towards the awkward cases.
awkward = st.sampled_from([" ", "  ", "\t", "\n", "\r\n", "\x00", "#", "##", "＃＃", "▁", "<0x41>", "<|eos|>",
                           "é", "e\u0301", "ﬁ", "🎉", "漢字", "'s", "\u2028", "\ufeff"])
texts = st.lists(st.one_of(st.text(), awkward), max_size=8).map("".join)


@settings(max_examples=60, deadline=None)
@given(text=texts)
def test_every_kind_round_trips_arbitrary_unicode(toks, text):
    for kind, tok in toks.items():
        ids = tok.encode(text)
        assert tok.decode(ids) == text, kind
        arr = np.asarray(ids, np.int64)
        assert int(tok.token_bytes[arr].sum()) == len(text.encode("utf-8")), kind
        assert int(tok.token_chars[arr].sum()) == len(text), kind
        assert all(0 <= i < tok.vocab_size for i in ids) and tok.eos_id not in ids, kind


@settings(max_examples=25, deadline=None)
@given(data=st.binary(max_size=40))
def test_byte_strings_round_trip_through_their_utf8_decoding(toks, data):
    """Arbitrary bytes: valid UTF-8 round-trips byte for byte; invalid sequences become U+FFFD in the
    text (as in bytes.decode(errors="replace")), and that text then round-trips."""
    text = data.decode("utf-8", errors="replace")
    for kind, tok in toks.items():
        assert tok.decode(tok.encode(text)).encode("utf-8") == text.encode("utf-8"), kind
    assert toks["bytes"].decode(list(data)) == text  # raw byte ids decode like bytes.decode


def test_sizes_and_fixed_special_ids(toks):
    for kind, tok in toks.items():
        assert tok.vocab_size <= VOCAB, kind
        assert tok.kind == kind
        expected = (256, 257, 258) if kind == "bytes" else (0, 1, 2)
        assert (tok.eos_id, tok.pad_id, tok.bos_id) == expected, kind
    assert toks["bpe"].piece(3) == "<0x00>" and toks["bpe"].piece(258) == "<0xFF>"
    assert toks["unigram"].special_ids["<|unk|>"] == 3 and toks["unigram"].piece(4) == "<0x00>"
    wp = toks["wordpiece"].backend.get_vocab()
    assert all(WORDPIECE_PREFIX + c in wp for c in tokenizers.pre_tokenizers.ByteLevel.alphabet())


def test_accounting_arrays(tok):
    for arr in (tok.token_bytes, tok.token_chars):
        assert arr.dtype == np.int32 and arr.shape == (tok.vocab_size,) and arr.min() >= 0
        assert arr[tok.eos_id] == 1 and arr[tok.pad_id] == 0 and arr[tok.bos_id] == 0
    assert (tok.token_chars <= tok.token_bytes).all()


@pytest.mark.parametrize("kind", KINDS)
def test_extra_special_tokens_and_sentinels(kind, tmp_path):
    tok = train_tokenizer(kind, TRAIN_TEXT, VOCAB, special_tokens=["<|mask|>"], num_sentinels=3)
    first = 259 if kind == "bytes" else 3
    assert tok.mask_id == first
    assert tok.sentinel_ids == [first + 1, first + 2, first + 3]
    assert tok.vocab_size <= VOCAB
    ids = tok.encode("x <|mask|> <|sentinel_0|>")
    assert tok.mask_id not in ids and tok.decode(ids) == "x <|mask|> <|sentinel_0|>"
    assert tok.decode([tok.mask_id, *tok.encode("hi"), *tok.sentinel_ids]) == "hi"
    assert tok.token_bytes[tok.mask_id] == 0 and tok.token_chars[tok.sentinel_ids].sum() == 0
    loaded = Tokenizer.load(tok.save(tmp_path / kind))
    assert loaded.fingerprint == tok.fingerprint and loaded.sentinel_ids == tok.sentinel_ids
    with pytest.raises(ConfigError, match="data.special_tokens"):
        train_tokenizer(kind, TRAIN_TEXT, VOCAB, special_tokens=["<|eos|>"])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("form", ["nfc", "nfkc"])
def test_normalization_contract(kind, form):
    tok = train_tokenizer(kind, TRAIN_TEXT, VOCAB, normalization=form)
    for text in ("e\u0301 café", "ﬁle ①², Å", "plain ascii"):
        normal = unicodedata.normalize(form.upper(), text)
        ids = tok.encode(text)
        assert tok.decode(ids) == normal
        assert int(tok.token_bytes[np.asarray(ids)].sum()) == len(normal.encode())
    assert tok.fingerprint != train_tokenizer(kind, TRAIN_TEXT, VOCAB).fingerprint


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_identity(kind, toks, tmp_path):
    tok = toks[kind]
    loaded = Tokenizer.load(tok.save(tmp_path / kind))
    assert type(loaded) is type(tok) and loaded.fingerprint == tok.fingerprint
    assert (tmp_path / kind / "kind.txt").read_text().strip() == kind
    sample = "naïve 🎉 code\n\tx = 1  # ##"
    assert loaded.encode(sample) == tok.encode(sample)
    assert np.array_equal(loaded.token_chars, tok.token_chars)


def test_vocab_size_limits_name_the_setting():
    for kind, too_small in (("bpe", 259), ("wordpiece", 515), ("unigram", 260), ("byte_bpe", 258)):
        with pytest.raises(ConfigError, match="model.vocab_size"):
            train_tokenizer(kind, TRAIN_TEXT, too_small)
    with pytest.raises(ConfigError, match="data.normalization"):
        train_tokenizer("bpe", TRAIN_TEXT, VOCAB, normalization="nfd")
    with pytest.raises(ConfigError, match="data.tokenizer"):
        train_tokenizer("sentencepiece", TRAIN_TEXT, VOCAB)


# --- fingerprint contract -------------------------------------------------------------------------


def _edited(tok, edit) -> Tokenizer:
    spec = json.loads(tok.definition())
    edit(spec)
    return type(tok).from_definition(json.dumps(spec), "edited")


def _swap_last_merge(spec):
    merges = spec["model"]["merges"]
    merges[-1], merges[-2] = merges[-2], merges[-1]


def _rename_piece(spec):
    vocab = spec["model"]["vocab"]
    if isinstance(vocab, list):  # unigram: [piece, score]
        vocab[-1][0] = vocab[-1][0] + "zz"
    elif "merges" not in spec["model"]:  # wordpiece
        last = max(vocab, key=vocab.get)
        vocab[last + "zz"] = vocab.pop(last)
    else:  # bpe: pieces are merge results; give the two newest pieces each other's ids
        a, b = sorted(vocab, key=vocab.get)[-2:]
        vocab[a], vocab[b] = vocab[b], vocab[a]


def _drop_last_piece_and_merge(spec):
    vocab = spec["model"]["vocab"]
    del vocab[max(vocab, key=vocab.get)]
    spec["model"]["merges"].pop()


def _rescore_piece(spec):
    spec["model"]["vocab"][-1][1] -= 0.5


def _rename_special(spec):
    for added in spec["added_tokens"]:
        if added["content"] == "<|bos|>":
            added["content"] = "<|begin|>"


@pytest.mark.parametrize("kind", ["byte_bpe", "bpe", "wordpiece", "unigram"])
def test_fingerprint_changes_with_any_merge_piece_or_special_token(kind, toks):
    tok = toks[kind]
    edits = [_rename_piece]
    if kind in ("byte_bpe", "bpe"):
        edits += [_swap_last_merge, _drop_last_piece_and_merge]
    if kind == "unigram":
        edits.append(_rescore_piece)
    for edit in edits:
        assert _edited(tok, edit).fingerprint != tok.fingerprint, edit.__name__
    spec = json.loads(tok.definition())
    _rename_special(spec)
    renamed = json.dumps(spec)
    # The renamed special is no longer <|bos|>: loading refuses it, and its fingerprint differs anyway.
    with pytest.raises(DataError):
        type(tok).from_definition(renamed, "edited")
    assert Tokenizer.fingerprint.fget(_Raw(tok.kind, renamed)) != tok.fingerprint
    extra = train_tokenizer(kind, TRAIN_TEXT, VOCAB, special_tokens=["<|mask|>"])
    assert extra.fingerprint != tok.fingerprint


class _Raw:
    def __init__(self, kind, text):
        self.kind, self._text = kind, text

    def definition(self):
        return self._text


@pytest.mark.parametrize("kind", KINDS)
def test_fingerprint_unchanged_by_reserialisation_and_retraining(kind, toks):
    tok = toks[kind]
    spec = json.loads(tok.definition())
    reordered = json.dumps(spec, indent=3, sort_keys=False)  # same definition, other formatting
    assert type(tok).from_definition(reordered, "x").fingerprint == tok.fingerprint
    assert train_tokenizer(kind, TRAIN_TEXT, VOCAB).fingerprint == tok.fingerprint  # deterministic


def test_bytes_extra_specials_change_the_fingerprint(toks):
    plain = toks["bytes"]
    assert train_tokenizer("bytes", [], 300, num_sentinels=1).fingerprint != plain.fingerprint
    assert train_tokenizer("bytes", [], 300).fingerprint == plain.fingerprint


def test_get_tokenizer_new_kinds_and_settings_are_cached_separately(text_dir, tmp_path, monkeypatch):
    corpus = load_corpus(str(text_dir))
    base = DataConfig(corpus=str(text_dir), tokenizer="bpe", tokenizer_train_bytes=50_000)
    first = get_tokenizer(base, 400, corpus, tmp_path)
    assert first.kind == "bpe" and get_tokenizer(base, 400, corpus, tmp_path).fingerprint == first.fingerprint
    masked = get_tokenizer(DataConfig(corpus=str(text_dir), tokenizer="bpe", tokenizer_train_bytes=50_000,
                                      special_tokens=("<|mask|>",)), 400, corpus, tmp_path)
    assert masked.mask_id == 3 and masked.fingerprint != first.fingerprint
    assert len(list((tmp_path / "tokenizers").iterdir())) == 2


def test_default_byte_bpe_is_unchanged(toks):
    """The default kind's ids and file layout are those of earlier lmx versions."""
    tok = toks["byte_bpe"]
    assert isinstance(tok, ByteBPETokenizer)
    spec = json.loads(tok.definition())
    assert spec["normalizer"] is None and spec["pre_tokenizer"]["type"] == "ByteLevel"
    assert [t["content"] for t in spec["added_tokens"]] == ["<|eos|>", "<|pad|>", "<|bos|>"]
