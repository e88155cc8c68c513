"""lmx.decode.engine.generate_tokens against a reference greedy loop that runs the full model
(no cache) every step, plus batching, determinism, seeds, stopping, streaming and errors."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmx.decode.engine import generate_tokens
from lmx.decode.logits import SamplingConfig
from lmx.errors import ConfigError
from lmx.nn import build_model
from tests.nn.helpers import tiny_config

CASES = {
    "rope": dict(),
    "alibi": dict(position__kind="alibi"),
    "sliding_window": dict(attention__pattern="sliding_window", attention__window=3),  # 5 + 6 tokens: the ring wraps
    "hybrid_AM": dict(layer_pattern="AM"),
    "encdec": dict(arch="encoder_decoder", position__kind="t5"),
}
SEEDS = {"encdec": 1}  # seed 0's encoder-decoder repeats one token for row 0
PROMPTS = [[11, 42, 7, 250, 99], [3, 180, 64]]  # different lengths
MAX_NEW = 6
BUFFER = 16  # the reference loop's fixed token buffer (causal: what follows a row is irrelevant)


@functools.cache
def _model(name: str):
    # init_std 0.4: with the default 0.02 a random tied-embedding model just repeats the last token (and
    # its next-token distribution is nearly flat); these greedy paths vary from step to step
    return build_model(tiny_config(init_std=0.4, **CASES[name]), rngs=nnx.Rngs(SEEDS.get(name, 0)))


@functools.cache
def _forward(name: str):
    model = _model(name)
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, tokens_1xL, enc_1xS):
        model = nnx.merge(graphdef, state)
        return model(enc_1xS, tokens_1xL) if model.config.arch == "encoder_decoder" else model(tokens_1xL)

    return functools.partial(forward, state)


def reference_greedy(name: str, prompt, n: int, vocab_limit: int | None = None):
    """(tokens, per-token log-probabilities): greedy decoding of one prompt with a full forward per token,
    log-softmax in float64. Encoder-decoders encode the prompt and decode from the pad id 0 (the default
    decoder start)."""
    forward = _forward(name)
    encdec = _model(name).config.arch == "encoder_decoder"
    enc = jnp.asarray([prompt], jnp.int32)
    seq = [0] if encdec else list(prompt)
    new, logprobs = [], []
    for _ in range(n):
        buffer = np.zeros((1, BUFFER), np.int32)
        buffer[0, : len(seq)] = seq
        logits = np.asarray(forward(jnp.asarray(buffer), enc)[0, len(seq) - 1], np.float64)
        if vocab_limit is not None:
            logits = logits[:vocab_limit]
        token = int(np.argmax(logits))
        logprobs.append(float(logits[token] - np.log(np.exp(logits - logits.max()).sum()) - logits.max()))
        seq.append(token)
        new.append(token)
    return new, logprobs


@functools.cache
def _greedy(name: str):
    return generate_tokens(_model(name), PROMPTS, max_new_tokens=MAX_NEW)


@pytest.mark.parametrize("name", list(CASES))
def test_greedy_matches_full_forward_loop(name):
    """Each row of a ragged batch equals that prompt decoded alone by the uncached reference: the same
    tokens and, step by step, the same log-probabilities."""
    out = _greedy(name)
    assert out.finish_reasons == ["length", "length"]
    for b, prompt in enumerate(PROMPTS):
        ref, ref_logprobs = reference_greedy(name, prompt, MAX_NEW)
        assert len(set(ref)) > 1, f"{name}: row {b} repeats one token; the comparison would prove little"
        assert out.tokens[b] == ref, f"{name}: row {b}"
        np.testing.assert_allclose(out.token_logprobs[b], ref_logprobs, rtol=0, atol=1e-5, err_msg=f"{name}: row {b}")
        assert out.logprobs[b] == pytest.approx(sum(ref_logprobs), rel=1e-4, abs=1e-4)


def test_batch_equals_one_by_one():
    batched = _greedy("rope")
    for b, prompt in enumerate(PROMPTS):
        alone = generate_tokens(_model("rope"), [prompt], max_new_tokens=MAX_NEW)
        assert alone.tokens == [batched.tokens[b]]
        assert alone.finish_reasons == [batched.finish_reasons[b]]
        assert alone.logprobs[0] == pytest.approx(batched.logprobs[b], rel=1e-5, abs=1e-5)


def test_greedy_is_deterministic():
    first = _greedy("rope")
    again = generate_tokens(_model("rope"), PROMPTS, max_new_tokens=MAX_NEW)
    assert again.tokens == first.tokens and again.logprobs == first.logprobs


def test_sampling_seeds():
    sampling = SamplingConfig(temperature=1.0)
    run = lambda seed: generate_tokens(_model("rope"), PROMPTS, max_new_tokens=MAX_NEW, sampling=sampling,
                                       seed=seed).tokens
    same = run(0)
    assert run(0) == same
    assert run(1) != same  # 12 draws from 300-way distributions
    assert same != _greedy("rope").tokens


def test_eos_stops_only_its_row():
    greedy = _greedy("rope")
    tokens = greedy.tokens
    # EOS: the first token that row 0 emits for the first time at step 2 or later and row 1 never emits
    eos = next(t for i, t in enumerate(tokens[0]) if i >= 2 and tokens[0].index(t) == i and t not in tokens[1])
    cut = tokens[0].index(eos)
    assert 2 <= cut < MAX_NEW - 1
    out = generate_tokens(_model("rope"), PROMPTS, max_new_tokens=MAX_NEW, eos_id=eos)
    assert out.finish_reasons == ["eos", "length"]
    assert out.tokens[0] == tokens[0][:cut]  # stopped at step `cut`, EOS not among the tokens
    # the log-probabilities of the kept tokens and of EOS itself, as the uncached reference has them
    ref_logprobs = reference_greedy("rope", PROMPTS[0], cut + 1)[1]
    np.testing.assert_allclose(out.token_logprobs[0], ref_logprobs, rtol=0, atol=1e-5)
    assert out.logprobs[0] == pytest.approx(sum(ref_logprobs), abs=1e-5)
    assert out.tokens[1] == tokens[1]
    np.testing.assert_allclose(out.token_logprobs[1], greedy.token_logprobs[1], rtol=0, atol=1e-6)


def test_context_limit():
    """context_len=10: row 0 (5 prompt tokens) has room for 5 new tokens < max_new_tokens."""
    out = generate_tokens(_model("rope"), PROMPTS, max_new_tokens=MAX_NEW, context_len=10)
    assert out.finish_reasons == ["context", "length"]
    assert out.tokens == [_greedy("rope").tokens[0][:5], _greedy("rope").tokens[1]]


def test_truncate_keeps_the_last_tokens():
    long_prompt = list(range(1, 12))
    with pytest.raises(ConfigError, match=r"prompt 0 has 11 tokens.*context.*truncate"):
        generate_tokens(_model("rope"), [long_prompt], max_new_tokens=2, context_len=8)
    out = generate_tokens(_model("rope"), [long_prompt], max_new_tokens=2, context_len=8, truncate=True)
    kept = generate_tokens(_model("rope"), [long_prompt[-7:]], max_new_tokens=2, context_len=8)
    assert out.tokens == kept.tokens and len(out.tokens[0]) == 1
    assert out.finish_reasons == ["context"]


def test_invalid_requests():
    model = _model("rope")
    with pytest.raises(ConfigError, match="prompt 1 is empty"):
        generate_tokens(model, [[1, 2], []], max_new_tokens=2)
    with pytest.raises(ConfigError, match="at least one prompt"):
        generate_tokens(model, [], max_new_tokens=2)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ConfigError, match="max_new_tokens"):
            generate_tokens(model, PROMPTS, max_new_tokens=bad)
    learned = build_model(tiny_config(position__kind="learned"), rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match=r"context_len=64 exceeds model.max_seq_len=32.*position=learned"):
        generate_tokens(learned, PROMPTS, max_new_tokens=2, context_len=64)
    encoder = build_model(tiny_config(arch="encoder"), rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match="model.arch=encoder"):
        generate_tokens(encoder, PROMPTS, max_new_tokens=2)


def test_stream_receives_every_token_in_order():
    calls = []
    out = generate_tokens(_model("rope"), PROMPTS, max_new_tokens=MAX_NEW,
                          stream=lambda tokens, active: calls.append((np.array(tokens), np.array(active))))
    streamed = [[int(t[b]) for t, a in calls if a[b]] for b in range(len(PROMPTS))]
    assert streamed == out.tokens == _greedy("rope").tokens
    assert len(calls) == MAX_NEW


def test_streamed_calls_share_one_compiled_loop():
    from lmx.decode import engine

    first, second = [], []
    generate_tokens(_model("rope"), PROMPTS, max_new_tokens=MAX_NEW, stream=lambda t, a: first.append(np.array(t)))
    compiled = engine._run_chunk._cache_size()
    out = generate_tokens(_model("rope"), PROMPTS, max_new_tokens=MAX_NEW,
                          stream=lambda t, a: second.append(np.array(t)))
    assert engine._run_chunk._cache_size() == compiled  # a new callback did not recompile the loop
    assert len(first) == len(second) == MAX_NEW  # each call's tokens went to its own callback
    assert [[int(t[b]) for t in second] for b in range(len(PROMPTS))] == out.tokens


def test_vocab_limit():
    limit = 50
    assert any(t >= limit for row in _greedy("rope").tokens for t in row)  # the limit changes something
    out = generate_tokens(_model("rope"), PROMPTS, max_new_tokens=MAX_NEW, vocab_limit=limit)
    for b, prompt in enumerate(PROMPTS):
        assert all(t < limit for t in out.tokens[b])
        assert out.tokens[b] == reference_greedy("rope", prompt, MAX_NEW, vocab_limit=limit)[0]
