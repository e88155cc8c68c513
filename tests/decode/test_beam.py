"""lmx.decode.beam.beam_search against exhaustive enumeration on a model small enough to score every
continuation with full forwards (no cache), plus length penalty, greedy equivalence, batching,
early stopping and errors."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmx.decode import text
from lmx.decode.beam import beam_search
from lmx.decode.engine import generate_tokens
from lmx.errors import ConfigError
from lmx.nn import build_model
from lmx.tokenizers.bytes import BytesTokenizer
from tests.nn.helpers import tiny_config

V = 5
PROMPT = [1, 2, 3]
N_NEW = 3


@functools.cache
def _model(vocab: int = V):
    # init_std 0.4: the next-token distributions are far from flat, so the rankings are not ties
    return build_model(tiny_config(vocab_size=vocab, n_layers=1, init_std=0.4), rngs=nnx.Rngs(1))


@functools.cache
def _forward():
    graphdef, state = nnx.split(_model())
    return jax.jit(lambda s, t: nnx.merge(graphdef, s)(t)), state


def _logprobs(prompt, continuations) -> np.ndarray:
    """float64 summed log p(continuation | prompt) by one full forward per sequence (batched)."""
    forward, state = _forward()
    lengths = [len(c) for c in continuations]
    L = len(prompt) + max(lengths)
    batch = np.zeros((len(continuations), L), np.int32)
    for i, c in enumerate(continuations):
        batch[i, : len(prompt) + len(c)] = list(prompt) + list(c)
    logits = np.asarray(forward(state, jnp.asarray(batch)), np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    out = np.zeros(len(continuations))
    for i, c in enumerate(continuations):
        for j, tok in enumerate(c):
            out[i] += logp[i, len(prompt) - 1 + j, tok]
    return out


def _check_hypotheses(hyps, prompt, eos_id, length_penalty):
    """Every hypothesis: logprob = the full-forward log-prob of its tokens (+ EOS when finished),
    score = logprob / len^length_penalty, and the list is sorted best first."""
    seqs = [h.tokens + ([eos_id] if h.finished else []) for h in hyps]
    ref = _logprobs(prompt, seqs)
    for h, seq, r in zip(hyps, seqs, ref):
        assert h.logprob == pytest.approx(r, abs=1e-4), (h, seq)
        assert h.score == pytest.approx(h.logprob / len(seq) ** length_penalty, rel=1e-5, abs=1e-6), h
        if eos_id is not None:
            assert eos_id not in h.tokens
    scores = [h.score for h in hyps]
    assert scores == sorted(scores, reverse=True)


def test_beam_equals_exhaustive_top_k():
    """beams = V^(n-1): no prefix is ever pruned, so the result is exactly the best 25 of all V^n."""
    beams = V ** (N_NEW - 1)
    everything = [list(s) for s in itertools.product(range(V), repeat=N_NEW)]
    ref = _logprobs(PROMPT, everything)
    order = np.argsort(-ref, kind="stable")[:beams]
    assert ref[order[0]] - ref[order[-1]] > 1.0  # not a flat distribution
    hyps = beam_search(_model(), [PROMPT], beams=beams, max_new_tokens=N_NEW, eos_id=None)[0]
    assert len(hyps) == beams
    assert [h.tokens for h in hyps] == [everything[i] for i in order]
    np.testing.assert_allclose([h.logprob for h in hyps], ref[order], rtol=0, atol=1e-5)
    assert not any(h.finished for h in hyps)
    np.testing.assert_allclose([h.score for h in hyps], ref[order] / N_NEW, rtol=0, atol=1e-5)


@pytest.mark.parametrize("length_penalty", [1.0, 0.6, -0.5, 2.0])
def test_length_penalty_scores(length_penalty):
    eos = 0
    hyps = beam_search(_model(), [PROMPT], beams=6, max_new_tokens=4, eos_id=eos, length_penalty=length_penalty)[0]
    assert len(hyps) == 6
    _check_hypotheses(hyps, PROMPT, eos, length_penalty)
    lengths = {len(h.tokens) + h.finished for h in hyps}
    assert any(h.finished for h in hyps) and len(lengths) > 1  # EOS and the penalty matter here


def test_num_return():
    full = beam_search(_model(), [PROMPT], beams=6, max_new_tokens=4, eos_id=0)[0]
    two = beam_search(_model(), [PROMPT], beams=6, max_new_tokens=4, eos_id=0, num_return=2)[0]
    assert [(h.tokens, h.finished) for h in two] == [(h.tokens, h.finished) for h in full[:2]]


def test_one_beam_is_greedy():
    greedy = generate_tokens(_model(), [PROMPT], max_new_tokens=5)
    hyps = beam_search(_model(), [PROMPT], beams=1, max_new_tokens=5, eos_id=None)[0]
    assert len(hyps) == 1
    assert hyps[0].tokens == greedy.tokens[0]
    assert hyps[0].logprob == pytest.approx(greedy.logprobs[0], abs=1e-5)


def test_batch_equals_each_alone():
    prompts = [[1, 2, 3, 4, 2], [3, 1]]
    batched = beam_search(_model(), prompts, beams=4, max_new_tokens=4, eos_id=0, length_penalty=0.8)
    for prompt, got in zip(prompts, batched):
        alone = beam_search(_model(), [prompt], beams=4, max_new_tokens=4, eos_id=0, length_penalty=0.8)[0]
        assert [(h.tokens, h.finished) for h in got] == [(h.tokens, h.finished) for h in alone]
        np.testing.assert_allclose([h.score for h in got], [h.score for h in alone], rtol=0, atol=1e-5)
        _check_hypotheses(got, prompt, 0, 0.8)


def test_early_stopping_both_valid():
    """Both settings return valid, sorted hypotheses. `False` only runs longer than `True` on the same
    trajectory and the finished pool only improves, so its k-th score is never worse."""
    kwargs = dict(beams=3, max_new_tokens=6, eos_id=0, length_penalty=1.0)
    early = beam_search(_model(), [PROMPT], early_stopping=True, **kwargs)[0]
    late = beam_search(_model(), [PROMPT], early_stopping=False, **kwargs)[0]
    for hyps in (early, late):
        assert len(hyps) == 3
        _check_hypotheses(hyps, PROMPT, 0, 1.0)
    for e, lt in zip(early, late):
        assert lt.score >= e.score - 1e-6


def test_errors():
    model = _model()
    with pytest.raises(ConfigError, match="beams"):
        beam_search(model, [PROMPT], beams=0, max_new_tokens=2)
    with pytest.raises(ConfigError, match="num_return"):
        beam_search(model, [PROMPT], beams=2, num_return=3, max_new_tokens=2)
    encoder = build_model(tiny_config(arch="encoder", vocab_size=V), rngs=nnx.Rngs(0))
    with pytest.raises(ConfigError, match="model.arch=encoder"):
        beam_search(encoder, [PROMPT], beams=2, max_new_tokens=2)


def test_text_level_beam_rejects_sampling_options():
    tokenizer = BytesTokenizer()
    model = _model(300)
    assert model.config.vocab_size >= tokenizer.vocab_size
    with pytest.raises(ConfigError, match=r"beam search.*temperature"):
        text.generate(model, tokenizer, ["ab"], beams=3, temperature=0.7, max_new_tokens=2)
