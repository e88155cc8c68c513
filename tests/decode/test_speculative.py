"""lmx.decode.speculative: greedy speculative decoding gives the target's greedy tokens exactly, and
sampled speculative decoding draws from the target's (warped) distribution, computed here exactly
with full forwards; plus EOS, budgets, batching and errors."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from flax import nnx

from lmx.decode import text
from lmx.decode.engine import generate_tokens
from lmx.decode.logits import SamplingConfig, warp_logits
from lmx.decode.speculative import speculative_generate
from lmx.errors import ConfigError
from lmx.nn import build_model
from lmx.tokenizers.bytes import BytesTokenizer
from tests.nn.helpers import tiny_config

PROMPTS = [[11, 42, 7, 250, 99], [3, 180, 64]]  # different lengths
MAX_NEW = 12  # a multiple of gamma + 1 for gamma 1, 3 and 5: no proposal is cut by the budget


@functools.cache
def _model(seed: int = 0, **overrides):
    # init_std 0.4: with the default 0.02 a random tied-embedding model just repeats the last token,
    # so every random draft would agree with the target
    return build_model(tiny_config(init_std=0.4, **overrides), rngs=nnx.Rngs(seed))


@functools.cache
def _greedy(eos_id=None):
    return generate_tokens(_model(), PROMPTS, max_new_tokens=MAX_NEW, eos_id=eos_id)


@pytest.mark.parametrize("gamma", [1, 3, 5])
def test_greedy_equals_target_greedy(gamma):
    ref = _greedy()
    other = speculative_generate(_model(), _model(seed=5), PROMPTS, max_new_tokens=MAX_NEW, gamma=gamma)
    assert other.tokens == ref.tokens
    assert other.finish_reasons == ["length", "length"]
    assert other.stats["acceptance_rate"] < 0.5  # an unrelated random draft is mostly rejected
    itself = speculative_generate(_model(), _model(), PROMPTS, max_new_tokens=MAX_NEW, gamma=gamma)
    assert itself.tokens == ref.tokens
    assert itself.stats["acceptance_rate"] == 1.0
    assert itself.stats["rounds"] == MAX_NEW // (gamma + 1)  # every round commits gamma + 1 tokens


def test_greedy_with_a_smaller_draft_and_each_prompt_alone():
    draft = _model(seed=3, n_layers=1)
    batched = speculative_generate(_model(), draft, PROMPTS, max_new_tokens=MAX_NEW, gamma=3)
    assert batched.tokens == _greedy().tokens
    for b, prompt in enumerate(PROMPTS):
        alone = speculative_generate(_model(), draft, [prompt], max_new_tokens=MAX_NEW, gamma=3)
        assert alone.tokens == [batched.tokens[b]]


@pytest.mark.parametrize("max_new", [1, 5, 7])
def test_greedy_budget(max_new):
    """Budgets that cut a round short commit exactly max_new tokens."""
    out = speculative_generate(_model(), _model(), PROMPTS, max_new_tokens=max_new, gamma=3)
    assert out.tokens == [row[:max_new] for row in _greedy().tokens]
    assert out.finish_reasons == ["length", "length"]


def test_eos_matches_generate_tokens():
    greedy = _greedy().tokens
    candidates = [t for t in greedy[0][2:] if t not in greedy[1]]
    assert candidates
    eos = candidates[0]
    ref = _greedy(eos_id=eos)
    assert ref.finish_reasons == ["eos", "length"]
    for draft in (_model(), _model(seed=5)):
        out = speculative_generate(_model(), draft, PROMPTS, max_new_tokens=MAX_NEW, gamma=3, eos_id=eos)
        assert out.tokens == ref.tokens
        assert out.finish_reasons == ref.finish_reasons


# sampled: the law of the first two new tokens over many rows against the exact target law

SV = 8
S_PROMPT = [1, 5, 2]
ROWS = 6000


@functools.cache
def _small(seed: int):
    return build_model(tiny_config(vocab_size=SV, n_layers=1, init_std=0.5), rngs=nnx.Rngs(seed))


def _exact_two_token_law(model, sampling: SamplingConfig) -> np.ndarray:
    """[SV*SV] probability of (t1, t2) after S_PROMPT, from full forwards and the same warping."""
    seqs = jnp.asarray([S_PROMPT + [t] for t in range(SV)], jnp.int32)
    logits = model(seqs)  # [SV, P+1, SV]
    p1 = jax.nn.softmax(warp_logits(logits[:1, len(S_PROMPT) - 1], sampling), axis=-1)[0]
    p2 = jax.nn.softmax(warp_logits(logits[:, len(S_PROMPT)], sampling), axis=-1)  # row t1: p(t2 | t1)
    return np.asarray(p1[:, None] * p2, np.float64).reshape(-1)


def _chi_square(counts: np.ndarray, probs: np.ndarray) -> tuple[float, int]:
    """(statistic, degrees of freedom). Cells with expected count < 5 are pooled into one cell (the
    usual validity condition of the chi-square approximation); a count in a cell of probability 0
    gives an infinite statistic."""
    n = counts.sum()
    if counts[probs <= 0].sum() > 0:
        return float("inf"), 1
    expected = probs * n
    small = (expected < 5) & (probs > 0)
    big = expected >= 5
    obs = list(counts[big]) + ([counts[small].sum()] if small.any() else [])
    exp = list(expected[big]) + ([expected[small].sum()] if small.any() else [])
    obs, exp = np.asarray(obs, np.float64), np.asarray(exp, np.float64)
    return float(((obs - exp) ** 2 / exp).sum()), len(obs) - 1


@pytest.mark.parametrize("sampling", [SamplingConfig(temperature=1.0), SamplingConfig(temperature=1.0, top_k=4),
                                      SamplingConfig(temperature=0.8, top_p=0.9)], ids=["t1", "top_k4", "top_p0.9"])
def test_sampled_law_is_the_targets(sampling):
    target, draft = _small(0), _small(1)
    out = speculative_generate(target, draft, [S_PROMPT] * ROWS, max_new_tokens=2, gamma=2, sampling=sampling,
                               seed=3)
    assert all(len(t) == 2 for t in out.tokens)
    pairs = np.asarray(out.tokens)
    counts = np.bincount(pairs[:, 0] * SV + pairs[:, 1], minlength=SV * SV)
    threshold = lambda df: scipy.stats.chi2.ppf(0.999, df)
    stat, df = _chi_square(counts, _exact_two_token_law(target, sampling))
    assert stat < threshold(df), (stat, df)
    # control: the same samples are clearly not from the draft's law, so the test has power
    assert 0.05 < out.stats["acceptance_rate"] < 0.98
    stat, df = _chi_square(counts, _exact_two_token_law(draft, sampling))
    assert stat > threshold(df), (stat, df)


def test_errors():
    target = _model()
    with pytest.raises(ConfigError, match="vocab_size"):
        speculative_generate(target, _model(vocab_size=320), PROMPTS, max_new_tokens=2)
    with pytest.raises(ConfigError, match="penalt"):
        speculative_generate(target, _model(), PROMPTS, max_new_tokens=2,
                             sampling=SamplingConfig(repetition_penalty=1.2))
    with pytest.raises(ConfigError, match=r"attention decoders.*draft.*layer_pattern='AM'"):
        speculative_generate(target, _model(layer_pattern="AM"), PROMPTS, max_new_tokens=2)
    for gamma in (0, -1, True):
        with pytest.raises(ConfigError, match="gamma"):
            speculative_generate(target, _model(), PROMPTS, max_new_tokens=2, gamma=gamma)
    tokenizer, other = BytesTokenizer(), BytesTokenizer(special_tokens=("<|mask|>",))
    assert other.fingerprint != tokenizer.fingerprint
    with pytest.raises(ConfigError, match="tokenizer"):
        text.generate(target, tokenizer, ["ab"], max_new_tokens=2, draft=_model(seed=5), draft_tokenizer=other)
