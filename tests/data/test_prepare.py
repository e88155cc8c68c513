import numpy as np
import pytest

from lmx.config import Config
from lmx.data import PreparedData, prepare_data
from lmx.data import tokens as tokens_mod
from lmx.errors import ConfigError
from lmx.tokenizers import Tokenizer
from lmx.tokenizers.byte_bpe import ByteBPETokenizer


def small_config(corpus, cache, **overrides):
    settings = {
        "model.vocab_size": 320,
        "model.max_seq_len": 16,
        "data.corpus": str(corpus),
        "data.seq_len": 16,
        "data.batch_size": 4,
        "data.valid_fraction": 0.2,
        "data.tokenizer_train_bytes": 20_000,
        "data.cache_dir": str(cache),
    }
    settings.update(overrides)
    return Config().replace(**settings)


@pytest.mark.parametrize("kind", ["byte_bpe", "bytes"])
def test_prepare_data_end_to_end(text_dir, tmp_path, capsys, kind):
    config = small_config(text_dir, tmp_path / "cache", **{"data.tokenizer": kind})
    messages = []
    data = prepare_data(config, log=messages.append)
    assert isinstance(data, PreparedData) and data.tokenizer.kind == kind
    assert capsys.readouterr().out == ""
    assert messages
    stats = data.stats
    assert stats["docs"] == stats["train_docs"] + stats["valid_docs"] == 24
    assert stats["train_tokens"] == data.train_tokens.size and stats["valid_tokens"] == data.valid_tokens.size
    assert data.tokenizer.vocab_size <= config.model.vocab_size
    # bits-per-byte accounting: token bytes of a split = its text bytes + one byte per EOS
    tb = data.tokenizer.token_bytes
    assert int(tb[data.train_tokens].sum()) == stats["train_bytes"] + stats["train_docs"]
    batch = next(data.train_iterator(seed=0))
    assert batch["inputs"].shape == (4, 16)
    assert batch["inputs"].max() < data.tokenizer.vocab_size
    assert data.valid_batches(2)[0]["inputs"].shape == (4, 16)
    assert data.valid_batches(1, process_index=1, process_count=2)[0]["inputs"].shape == (2, 16)


def test_prepare_data_second_call_uses_the_caches(text_dir, tmp_path, monkeypatch):
    config = small_config(text_dir, tmp_path / "unused")
    first = prepare_data(config, cache_dir=tmp_path / "cache")
    monkeypatch.setattr(ByteBPETokenizer, "train", lambda *a, **k: pytest.fail("retrained"))
    monkeypatch.setattr(tokens_mod, "tokenize_documents", lambda *a: pytest.fail("re-tokenized"))
    messages = []
    second = prepare_data(config, cache_dir=tmp_path / "cache", log=messages.append)
    assert second.tokenizer.fingerprint == first.tokenizer.fingerprint
    assert np.array_equal(second.train_tokens, first.train_tokens)
    assert second.stats == first.stats
    assert not (tmp_path / "unused").exists()  # the cache_dir argument wins over data.cache_dir
    assert not any("training" in m or "tokenizing" in m for m in messages)


def test_changing_the_split_rebuilds(text_dir, tmp_path):
    a = prepare_data(small_config(text_dir, tmp_path))
    b = prepare_data(small_config(text_dir, tmp_path, **{"data.valid_fraction": 0.5}))
    assert a.stats["token_cache"] != b.stats["token_cache"]
    assert a.stats["valid_docs"] != b.stats["valid_docs"]


def test_prepare_data_with_a_given_tokenizer(text_dir, tmp_path, monkeypatch):
    config = small_config(text_dir, tmp_path)
    first = prepare_data(config)
    first.tokenizer.save(tmp_path / "run_tokenizer")
    saved = Tokenizer.load(tmp_path / "run_tokenizer")
    monkeypatch.setattr(ByteBPETokenizer, "train", lambda *a, **k: pytest.fail("retrained"))
    other_cache = prepare_data(config, cache_dir=tmp_path / "other", tokenizer=saved)
    assert other_cache.tokenizer is saved
    assert np.array_equal(other_cache.train_tokens, first.train_tokens)
    with pytest.raises(ConfigError, match="data.tokenizer"):
        prepare_data(config.replace(**{"data.tokenizer": "bytes"}), tokenizer=saved)
    with pytest.raises(ConfigError, match="model.vocab_size"):
        prepare_data(config.replace(**{"model.vocab_size": 300}), tokenizer=saved)
