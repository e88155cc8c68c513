"""Loading existing tokenizers from small files made here: tokenizer.json, SentencePiece .model, .tiktoken."""

import base64
import io
import json

import numpy as np
import pytest

from lmx.config import Config, DataConfig, ModelConfig
from lmx.data import get_tokenizer, load_corpus
from lmx.errors import ConfigError, DataError
from lmx.tokenizers import Tokenizer, train_tokenizer
from lmx.tokenizers.external import load_external

TEXT = [
    "def add(a, b):\n    return a + b\n" * 10,
    "the quick brown fox jumps over the lazy dog. " * 10,
    "naïve café — ünïcödé ✓ 漢字 🎉 " * 5,
]
SAMPLE = "def f(x):\n    return x  # the fox, naïve 🎉"


def test_hf_json_file_loads_with_its_own_ids(tmp_path):
    source = train_tokenizer("byte_bpe", TEXT, 300)
    path = tmp_path / "tokenizer.json"
    path.write_text(source.definition(), encoding="utf-8")
    tok = load_external(f"file:{path}")
    assert tok.kind == "hf_json" and tok.vocab_size == source.vocab_size
    assert tok.encode(SAMPLE) == source.encode(SAMPLE) and tok.decode(tok.encode(SAMPLE)) == SAMPLE
    assert (tok.eos_id, tok.pad_id, tok.bos_id) == (0, 1, 2)
    assert np.array_equal(tok.token_bytes, source.token_bytes)
    loaded = Tokenizer.load(tok.save(tmp_path / "saved"))
    assert loaded.kind == "hf_json" and loaded.fingerprint == tok.fingerprint


def test_hf_json_without_lmx_specials_gets_them_appended(tmp_path):
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    backend = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece()
    backend.train_from_iterator(TEXT, trainers.WordPieceTrainer(
        vocab_size=200, special_tokens=["[UNK]", "[SEP]"], show_progress=False))
    path = tmp_path / "bert.json"
    backend.save(str(path))
    n = backend.get_vocab_size()
    tok = load_external(str(path))
    assert tok.eos_id == backend.token_to_id("[SEP]")  # the file's own end token
    assert (tok.pad_id, tok.bos_id) == (n, n + 1)  # appended after the file's vocabulary
    ids = tok.encode("the fox")
    assert ids == backend.encode("the fox").ids and tok.decode(ids) == "the fox"
    assert tok.token_bytes[tok.encode("quick")].sum() == 5


def test_sentencepiece_model(tmp_path):
    spm = pytest.importorskip("sentencepiece", reason="the optional sentencepiece package is not installed")
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(TEXT * 3), model_writer=buffer, vocab_size=400, hard_vocab_limit=False,
                                   model_type="unigram", byte_fallback=True, minloglevel=2)
    path = tmp_path / "m.model"
    path.write_bytes(buffer.getvalue())
    reference = spm.SentencePieceProcessor(model_proto=buffer.getvalue())
    tok = load_external(f"file:{path}")
    assert tok.kind == "sentencepiece"
    assert tok.encode(SAMPLE) == reference.encode(SAMPLE)
    assert tok.decode(tok.encode("the fox")) == "the fox"
    assert (tok.eos_id, tok.bos_id) == (reference.eos_id(), reference.bos_id())
    assert tok.pad_id == reference.get_piece_size()  # the model has no pad piece: appended
    ids = tok.encode("the lazy dog")
    assert tok.token_bytes[ids].sum() == len(" the lazy dog")  # SentencePiece's dummy-prefix space counts
    loaded = Tokenizer.load(tok.save(tmp_path / "saved"))
    assert loaded.fingerprint == tok.fingerprint and loaded.encode(SAMPLE) == tok.encode(SAMPLE)


def _tiktoken_ranks() -> dict[bytes, int]:
    """Single bytes, then merges learned by a small byte-level BPE, as tiktoken ranks."""
    ranks = {bytes([b]): b for b in range(256)}
    source = train_tokenizer("byte_bpe", TEXT, 360)
    for piece in sorted(source.backend.get_vocab(), key=source.backend.token_to_id):
        data = source.piece_bytes()[source.backend.token_to_id(piece)]
        if len(data) > 1 and data not in ranks:
            ranks[data] = len(ranks)
    return ranks


def test_tiktoken_file_matches_tiktoken(tmp_path):
    ranks = _tiktoken_ranks()
    path = tmp_path / "tiny.tiktoken"
    path.write_text("".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in ranks.items()))
    tok = load_external(f"file:{path}")
    assert tok.kind == "tiktoken" and tok.vocab_size == len(ranks) + 3
    assert (tok.eos_id, tok.pad_id, tok.bos_id) == (len(ranks), len(ranks) + 1, len(ranks) + 2)
    for text in (SAMPLE, *TEXT, "", "  \n\t x"):
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert tok.token_bytes[np.asarray(ids, np.int64)].sum() == len(text.encode())
    tiktoken = pytest.importorskip("tiktoken", reason="tiktoken is not installed (comparison only)")
    from lmx.tokenizers.external import GPT2_PATTERN

    reference = tiktoken.Encoding("tiny", pat_str=GPT2_PATTERN,
                                  mergeable_ranks=ranks, special_tokens={})
    for text in (SAMPLE, *TEXT):
        assert tok.encode(text) == reference.encode_ordinary(text)


def test_missing_and_malformed_files_name_the_setting(tmp_path):
    for name in ("nope.json", "nope.model", "nope.tiktoken"):
        with pytest.raises(DataError, match=r"data.tokenizer: .*does not exist.*nothing is downloaded"):
            load_external(f"file:{tmp_path / name}")
    with pytest.raises(DataError, match="data.tokenizer: cannot tell the format"):
        load_external(f"file:{tmp_path / 'x.vocab'}")
    bad = tmp_path / "bad.tiktoken"
    bad.write_text("not-base64!! 0\n")
    with pytest.raises(DataError, match="line 1"):
        load_external(f"file:{bad}")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DataError, match="not a valid tokenizers JSON"):
        load_external(f"file:{tmp_path / 'bad.json'}")


def test_data_tokenizer_file_setting(tmp_path, text_dir):
    source = train_tokenizer("byte_bpe", TEXT, 300)
    path = tmp_path / "tokenizer.json"
    path.write_text(source.definition(), encoding="utf-8")
    config = DataConfig(corpus=str(text_dir), tokenizer=f"file:{path}")
    tok = get_tokenizer(config, 512, load_corpus(str(text_dir)), tmp_path / "cache")
    assert tok.kind == "hf_json" and tok.encode(SAMPLE) == source.encode(SAMPLE)
    with pytest.raises(ConfigError, match="model.vocab_size"):
        get_tokenizer(config, 299, load_corpus(str(text_dir)), tmp_path / "cache")
    with pytest.raises(ConfigError, match="data.num_sentinels"):
        get_tokenizer(DataConfig(corpus=str(text_dir), tokenizer=f"file:{path}", num_sentinels=2), 512,
                      load_corpus(str(text_dir)), tmp_path / "cache")
    Config(model=ModelConfig(vocab_size=100), data=config)  # the file's size is checked on load, not here
    with pytest.raises(ConfigError, match="data.tokenizer"):
        DataConfig(tokenizer="file:")
    with pytest.raises(ConfigError, match="data.tokenizer"):
        DataConfig(tokenizer="sentencepiece")


def test_json_definition_is_what_the_fingerprint_covers(tmp_path):
    source = train_tokenizer("byte_bpe", TEXT, 300)
    path = tmp_path / "tokenizer.json"
    path.write_text(source.definition(), encoding="utf-8")
    first = load_external(str(path)).fingerprint
    spec = json.loads(source.definition())
    spec["model"]["merges"].pop()
    path.write_text(json.dumps(spec), encoding="utf-8")
    assert load_external(str(path)).fingerprint != first
