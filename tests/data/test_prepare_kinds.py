"""prepare_data with the new kinds and with an external file, and the run-directory round trip."""

import pytest

from lmx.config import Config
from lmx.data import prepare_data
from lmx.errors import ConfigError
from lmx.tokenizers import Tokenizer, train_tokenizer


def small_config(corpus, cache, **overrides):
    settings = {
        "model.vocab_size": 320, "model.max_seq_len": 16, "data.corpus": str(corpus), "data.seq_len": 16,
        "data.batch_size": 4, "data.valid_fraction": 0.2, "data.tokenizer_train_bytes": 20_000,
        "data.cache_dir": str(cache),
    }
    settings.update(overrides)
    return Config().replace(**settings)


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "unigram"])
def test_prepare_data_new_kinds(text_dir, tmp_path, kind):
    config = small_config(text_dir, tmp_path / "cache", **{"data.tokenizer": kind, "model.vocab_size": 600,
                                                           "data.special_tokens": ("<|mask|>",)})
    data = prepare_data(config)
    tok = data.tokenizer
    assert tok.kind == kind and tok.mask_id == 3 and tok.vocab_size <= 600
    stats = data.stats
    assert int(tok.token_bytes[data.train_tokens].sum()) == stats["train_bytes"] + stats["train_docs"]
    assert int(tok.token_bytes[data.valid_tokens].sum()) == stats["valid_bytes"] + stats["valid_docs"]
    again = prepare_data(config, tokenizer=Tokenizer.load(tok.save(tmp_path / "saved")))
    assert again.tokenizer.fingerprint == tok.fingerprint


def test_prepare_data_with_a_tokenizer_file(text_dir, tmp_path):
    source = train_tokenizer("unigram", ["def f(x):\n    return x\n" * 50], 300)
    path = tmp_path / "tokenizer.json"
    path.write_text(source.definition(), encoding="utf-8")
    config = small_config(text_dir, tmp_path / "cache", **{"data.tokenizer": f"file:{path}"})
    data = prepare_data(config)
    assert data.tokenizer.kind == "hf_json" and data.stats["tokenizer"] == "hf_json"
    saved = Tokenizer.load(data.tokenizer.save(tmp_path / "run-tokenizer"))
    assert prepare_data(config, tokenizer=saved).tokenizer.fingerprint == data.tokenizer.fingerprint
    with pytest.raises(ConfigError, match="data.tokenizer"):
        prepare_data(small_config(text_dir, tmp_path / "cache"), tokenizer=saved)  # byte_bpe config
