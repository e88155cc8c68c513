"""Bits per byte / per character: the eval step's number equals the one computed from the per-token
loss and the text's token, byte and character counts, for tokenizers of different granularity."""

import math

import jax
import numpy as np
import pytest
from flax import nnx

from lmx.config import Config, DataConfig, ModelConfig
from lmx.data.windows import make_example
from lmx.eval import evaluate, summarize_eval_sums
from lmx.nn import Transformer
from lmx.tokenizers import train_tokenizer
from lmx.train.step import make_eval_step

TEXT = "def naïve(x):\n    return x * 2  # café ✓ 漢字 🎉\n"
TRAIN = ["def add(a, b):\n    return a + b\n" * 10, "naïve café ✓ " * 10]


@pytest.fixture(scope="module")
def model_parts():
    config = Config(model=ModelConfig(d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=640,
                                      max_seq_len=128), data=DataConfig(seq_len=128))
    graphdef, params = nnx.split(Transformer(config.model, rngs=nnx.Rngs(params=0)))
    return config, graphdef, params


@pytest.mark.parametrize("kind", ["bytes", "byte_bpe", "bpe", "unigram"])
def test_bits_per_byte_and_char_two_ways(kind, model_parts):
    config, graphdef, params = model_parts
    tok = train_tokenizer(kind, TRAIN, 640)
    ids = tok.encode(TEXT)
    # Window: EOS (document start), the text, EOS; every text token and the final EOS are targets.
    window = np.array([tok.eos_id, *ids, tok.eos_id], np.int32)
    example = make_example(window, config.data.seq_len, tok.eos_id, tok.pad_id)
    batch = {k: jax.numpy.asarray(v[None]) for k, v in example.items()}
    step = jax.jit(make_eval_step(graphdef, jax.numpy.asarray(tok.token_bytes),
                                  jax.numpy.asarray(tok.token_chars)))
    result = evaluate(step, params, [batch])

    n_tokens = len(ids) + 1
    n_bytes = len(TEXT.encode("utf-8")) + 1  # the closing EOS stands for one byte / one character
    n_chars = len(TEXT) + 1
    assert result["tokens"] == n_tokens and result["bytes"] == n_bytes and result["chars"] == n_chars
    loss = result["loss"]  # nats per token
    assert result["bits_per_byte"] == pytest.approx(loss * n_tokens / n_bytes / math.log(2), rel=1e-6)
    assert result["bits_per_char"] == pytest.approx(loss * n_tokens / n_chars / math.log(2), rel=1e-6)
    # An untrained model is near uniform: per-token loss ~ ln(vocab), so bits/byte scales with tokens/byte.
    assert loss == pytest.approx(math.log(config.model.vocab_size), rel=0.1)


def test_without_token_chars_bits_per_char_is_nan(model_parts):
    config, graphdef, params = model_parts
    tok = train_tokenizer("bytes", [], 640)
    example = make_example(np.array([tok.eos_id, *tok.encode("hi")], np.int32), 8, tok.eos_id, tok.pad_id)
    step = make_eval_step(graphdef, jax.numpy.asarray(tok.token_bytes))
    result = evaluate(step, params, [{k: jax.numpy.asarray(v[None]) for k, v in example.items()}])
    assert math.isnan(result["bits_per_char"]) and result["bits_per_byte"] > 0
    assert math.isnan(summarize_eval_sums(1.0, 1.0, 1.0)["bits_per_char"])
    assert summarize_eval_sums(2 * math.log(2), 1.0, 4.0, 2.0)["bits_per_char"] == pytest.approx(1.0)
