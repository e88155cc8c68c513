"""Sampling processors/warpers against hand-made cases and independent numpy references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmx.decode.logits import (
    SamplingConfig,
    apply_min_p,
    apply_no_repeat_ngram,
    apply_presence_frequency,
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    log_softmax_safe,
    process_logits,
    sample_token,
    warp_logits,
)
from lmx.errors import ConfigError

NEG = -np.inf
PROBS5 = np.array([0.5, 0.2, 0.15, 0.1, 0.05])


def kept(logits_BxV) -> list[set[int]]:
    arr = np.asarray(logits_BxV)
    return [set(np.flatnonzero(np.isfinite(row)).tolist()) for row in arr]


def known_logits():
    # Shuffled so that the sort inside top-p is exercised; a constant shift must not matter.
    order = np.array([3, 0, 4, 1, 2])
    return jnp.asarray(np.log(PROBS5[order])[None, :] + 1.7, jnp.float32), order


# ---------------------------------------------------------------- numpy references


def np_softmax(x):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def ref_top_k(row, k):
    kth = np.sort(row)[::-1][k - 1]
    return np.where(row >= kth, row, NEG)


def ref_top_p(row, p):
    probs = np_softmax(row)
    order = np.argsort(-probs, kind="stable")
    out = np.full_like(row, NEG)
    total = 0.0
    for idx in order:  # smallest prefix whose mass reaches p
        out[idx] = row[idx]
        total += probs[idx]
        if total >= p:
            break
    return out


def ref_min_p(row, min_p):
    probs = np_softmax(row)
    return np.where(probs >= min_p * probs.max(), row, NEG)


def ref_no_repeat_banned(seq, n):
    """Brute force: collect all n-grams of seq, ban continuations of its last n-1 tokens."""
    if len(seq) < n:
        return set()
    prefix = tuple(seq[len(seq) - n + 1 :]) if n > 1 else ()
    banned = set()
    for j in range(len(seq) - n + 1):
        gram = tuple(seq[j : j + n])
        if gram[:-1] == prefix:
            banned.add(gram[-1])
    return banned


# ---------------------------------------------------------------- warpers: exact masks


@pytest.mark.parametrize(
    "p, expected",
    [
        (0.7, {0, 1}),
        (0.71, {0, 1, 2}),
        (0.5, {0}),
        (0.49, {0}),
        (0.96, {0, 1, 2, 3, 4}),
        (0.94, {0, 1, 2, 3}),
    ],
)
def test_top_p_known_distribution(p, expected):
    logits, order = known_logits()
    got = {int(order[i]) for i in kept(apply_top_p(logits, p))[0]}
    assert got == expected


@pytest.mark.parametrize(
    "min_p, expected", [(0.3, {0, 1, 2}), (0.31, {0, 1}), (0.1, {0, 1, 2, 3, 4}), (0.9, {0})]
)
def test_min_p_known_distribution(min_p, expected):
    logits, order = known_logits()
    got = {int(order[i]) for i in kept(apply_min_p(logits, min_p))[0]}
    assert got == expected


def test_min_p_is_relative_to_temperature_scaled_probs():
    logits, order = known_logits()
    # At temperature 2 the probabilities flatten to sqrt(p): 0.3 * sqrt(0.5) = 0.212 <= sqrt(0.05) = 0.224.
    cfg = SamplingConfig(temperature=2.0, min_p=0.3)
    assert {int(order[i]) for i in kept(warp_logits(logits, cfg))[0]} == {0, 1, 2, 3, 4}


@pytest.mark.parametrize(
    "k, expected", [(1, {0}), (2, {0, 1}), (4, {0, 1, 2, 3}), (5, {0, 1, 2, 3, 4}), (9, {0, 1, 2, 3, 4})]
)
def test_top_k_known_distribution(k, expected):
    logits, order = known_logits()
    got = {int(order[i]) for i in kept(apply_top_k(logits, k))[0]}
    assert got == expected


def test_top_k_keeps_ties_at_kth_value():
    logits = jnp.array([[3.0, 1.0, 2.0, 2.0, 0.0]])
    assert kept(apply_top_k(logits, 2)) == [{0, 2, 3}]


def test_kept_logits_are_unchanged():
    logits, _ = known_logits()
    for out in (apply_top_k(logits, 3), apply_top_p(logits, 0.8), apply_min_p(logits, 0.2)):
        out = np.asarray(out)
        mask = np.isfinite(out)
        np.testing.assert_array_equal(out[mask], np.asarray(logits)[mask])
        assert np.all(out[~mask] == NEG)


def test_warpers_against_numpy_reference_on_random_logits():
    rng = np.random.default_rng(0)
    batch, vocab = 6, 50
    # Rows with very different entropies: peaked to nearly flat.
    scales = np.array([0.1, 0.5, 1.0, 2.0, 4.0, 8.0])[:, None]
    logits_np = (rng.standard_normal((batch, vocab)) * scales).astype(np.float32)
    logits = jnp.asarray(logits_np)
    top_k = jax.jit(apply_top_k, static_argnums=1)
    top_p = jax.jit(apply_top_p, static_argnums=1)
    min_p = jax.jit(apply_min_p, static_argnums=1)
    for k in (1, 3, 17):
        np.testing.assert_array_equal(
            np.asarray(top_k(logits, k)), np.stack([ref_top_k(r, k) for r in logits_np])
        )
    for p in (0.05, 0.3, 0.9, 0.99):
        np.testing.assert_array_equal(
            np.asarray(top_p(logits, p)), np.stack([ref_top_p(r, p) for r in logits_np])
        )
    for mp in (0.01, 0.2, 0.7):
        np.testing.assert_array_equal(
            np.asarray(min_p(logits, mp)), np.stack([ref_min_p(r, mp) for r in logits_np])
        )


def test_disabled_warpers_are_noops():
    logits = jnp.asarray(np.random.default_rng(1).standard_normal((2, 7)), jnp.float32)
    for out in (
        apply_top_k(logits, 0),
        apply_top_k(logits, 7),
        apply_top_p(logits, 1.0),
        apply_min_p(logits, 0.0),
    ):
        np.testing.assert_array_equal(np.asarray(out), np.asarray(logits))
    np.testing.assert_array_equal(np.asarray(warp_logits(logits, SamplingConfig())), np.asarray(logits))


def test_temperature_scaling():
    logits = jnp.array([[2.0, -1.0, 0.5]])
    np.testing.assert_allclose(np.asarray(apply_temperature(logits, 0.5)), [[4.0, -2.0, 1.0]])
    np.testing.assert_allclose(np.asarray(apply_temperature(logits, 4.0)), [[0.5, -0.25, 0.125]])
    np.testing.assert_array_equal(np.asarray(apply_temperature(logits, 0.0)), np.asarray(logits))


def test_log_softmax_safe_handles_masked_rows():
    logits = jnp.array([[NEG, NEG, NEG], [0.0, NEG, math.log(3.0)]])
    out = np.asarray(log_softmax_safe(logits))
    assert np.all(out[0] == NEG)
    np.testing.assert_allclose(out[1], [math.log(0.25), NEG, math.log(0.75)], rtol=1e-6)


def test_all_masked_row_stays_masked_without_nan():
    logits = jnp.array([[NEG, NEG, NEG, NEG], [1.0, 2.0, 3.0, 4.0]])
    for out in (apply_top_k(logits, 2), apply_top_p(logits, 0.5), apply_min_p(logits, 0.5)):
        out = np.asarray(out)
        assert not np.any(np.isnan(out))
        assert np.all(out[0] == NEG)


# ---------------------------------------------------------------- history-dependent processors


def test_repetition_penalty_hand_made():
    logits = jnp.array([[2.0, -2.0, 1.0, -0.5, 0.0, 3.0], [2.0, -2.0, 1.0, -0.5, 0.0, 3.0]])
    # Row 0: tokens 0 (three times), 1 and 4 valid; token 5 lies past the length and is ignored.
    # Row 1: only token 3 valid; 2 beyond the length.
    history = jnp.array([[0, 1, 0, 0, 4, 5], [3, 2, 2, 2, 2, 2]], jnp.int32)
    length = np.array([5, 1])
    valid = jnp.asarray(np.arange(6)[None, :] < length[:, None])
    out = np.asarray(apply_repetition_penalty(logits, history, valid, 2.0))
    np.testing.assert_allclose(out[0], [1.0, -4.0, 1.0, -0.5, 0.0, 3.0])  # repeated 0 divided once
    np.testing.assert_allclose(out[1], [2.0, -2.0, 1.0, -1.0, 0.0, 3.0])
    # penalty < 1 boosts instead.
    out = np.asarray(apply_repetition_penalty(logits, history, valid, 0.5))
    np.testing.assert_allclose(out[0], [4.0, -1.0, 1.0, -0.5, 0.0, 3.0])


def test_repetition_penalty_ignores_garbage_ids_past_length():
    logits = jnp.zeros((1, 4)) + jnp.array([[1.0, 1.0, 1.0, 1.0]])
    history = jnp.array([[2, -1, 99, -7]], jnp.int32)  # only the first entry is valid
    valid = jnp.array([[True, False, False, False]])
    out = np.asarray(apply_repetition_penalty(logits, history, valid, 4.0))
    np.testing.assert_allclose(out[0], [1.0, 1.0, 0.25, 1.0])


def test_presence_frequency_counts_only_generated_tokens():
    vocab = 5
    logits = jnp.zeros((2, vocab))
    # Row 0: prompt [1, 1], generated [2, 2, 3], garbage 1 beyond. Row 1: prompt [4], generated [4, 0].
    history = jnp.array([[1, 1, 2, 2, 3, 1], [4, 4, 0, 1, 1, 1]], jnp.int32)
    cfg = SamplingConfig(presence_penalty=0.5, frequency_penalty=0.25)
    out = np.asarray(process_logits(logits, cfg, history, jnp.array([5, 3]), jnp.array([2, 1])))
    np.testing.assert_allclose(out[0], [0.0, 0.0, -(0.5 + 2 * 0.25), -(0.5 + 0.25), 0.0])
    np.testing.assert_allclose(out[1], [-(0.5 + 0.25), 0.0, 0.0, 0.0, -(0.5 + 0.25)])
    # Direct call with an explicit generated mask gives the same thing.
    generated = jnp.array([[0, 0, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0]], bool)
    np.testing.assert_allclose(
        np.asarray(apply_presence_frequency(logits, history, generated, 0.5, 0.25)), out
    )


def test_no_repeat_ngram_hand_made():
    vocab = 8
    logits = jnp.zeros((3, vocab))
    history = jnp.array(
        [
            [1, 2, 3, 1, 2, 5, 1, 7, 7],  # length 7 (n=2) or 5 (n=3); the 7s are garbage
            [4, 5, 4, 6, 4, 0, 0, 0, 0],  # length 5, garbage zeros beyond
            [3, 3, 3, 3, 3, 3, 3, 3, 3],  # length 1: too short to ban anything
        ],
        jnp.int32,
    )
    length = jnp.array([7, 5, 1])
    # n=2. Row 0 valid [1 2 3 1 2 5 1], last token 1 -> bigrams (1,2),(1,2) -> ban {2}.
    # Row 1 valid [4 5 4 6 4], last token 4 -> (4,5),(4,6) -> ban {5, 6}.
    assert [
        set(np.flatnonzero(np.isinf(r)).tolist())
        for r in np.asarray(apply_no_repeat_ngram(logits, history, length, 2))
    ] == [
        {2},
        {5, 6},
        set(),
    ]
    # n=3 with lengths [5, 5, 1]. Row 1 [4 5 4 6 4], last (6, 4): only the current suffix -> nothing.
    out3 = np.asarray(apply_no_repeat_ngram(logits, history, jnp.array([5, 5, 1]), 3))
    # Row 0 with length 5: [1 2 3 1 2], last (1, 2) -> trigram (1,2,3) -> ban {3}.
    assert [set(np.flatnonzero(np.isinf(r)).tolist()) for r in out3] == [{3}, set(), set()]


def test_no_repeat_ngram_garbage_past_length_is_ignored():
    logits = jnp.zeros((1, 6))
    # Valid [1, 2, 1]; beyond it "1, 4" would ban 4 if it were read.
    history = jnp.array([[1, 2, 1, 4, 1, 5]], jnp.int32)
    banned = np.flatnonzero(
        np.isinf(np.asarray(apply_no_repeat_ngram(logits, history, jnp.array([3]), 2))[0])
    )
    assert banned.tolist() == [2]


def test_no_repeat_ngram_against_brute_force():
    rng = np.random.default_rng(3)
    batch, steps, vocab = 16, 12, 4  # small vocab so that repeats are frequent
    history_np = rng.integers(0, vocab, (batch, steps)).astype(np.int32)
    length_np = rng.integers(0, steps + 1, (batch,)).astype(np.int32)
    fn = jax.jit(apply_no_repeat_ngram, static_argnums=3)
    logits_np = rng.standard_normal((batch, vocab)).astype(np.float32)
    saw_a_ban = False
    for n in (1, 2, 3, 4):
        out = np.asarray(fn(jnp.asarray(logits_np), jnp.asarray(history_np), jnp.asarray(length_np), n))
        for b in range(batch):
            expected = ref_no_repeat_banned(history_np[b, : length_np[b]].tolist(), n)
            assert set(np.flatnonzero(np.isinf(out[b])).tolist()) == expected, (n, b)
            saw_a_ban |= bool(expected)
            keep = np.isfinite(out[b])
            np.testing.assert_array_equal(out[b][keep], logits_np[b][keep])
    assert saw_a_ban


def test_process_logits_order_penalty_before_temperature():
    # Repetition penalty and temperature commute (both scale), so check against top-k and an additive
    # penalty, where the order changes the result.
    logits = jnp.array([[3.0, 2.5, 0.0]])
    history = jnp.array([[0]], jnp.int32)
    cfg = SamplingConfig(repetition_penalty=2.0, top_k=1)
    # Penalty first: [1.5, 2.5, 0] -> top-1 keeps token 1. Top-k first would keep token 0.
    assert kept(process_logits(logits, cfg, history, jnp.array([1]), jnp.array([1]))) == [{1}]
    # Presence penalty (a processor) also runs before temperature: (1 - 1) / 0.5 = 0, not 1/0.5 - 1 = 1.
    cfg = SamplingConfig(presence_penalty=1.0, temperature=0.5)
    out = process_logits(
        jnp.array([[1.0, 0.0]]), cfg, jnp.array([[0]], jnp.int32), jnp.array([1]), jnp.array([0])
    )
    np.testing.assert_allclose(np.asarray(out), [[0.0, 0.0]])


def test_process_logits_jit_and_history_required():
    cfg = SamplingConfig(repetition_penalty=1.3, no_repeat_ngram=2, frequency_penalty=0.1, top_p=0.9)
    fn = jax.jit(process_logits, static_argnums=1)
    logits = jnp.asarray(np.random.default_rng(4).standard_normal((2, 9)), jnp.float32)
    history = jnp.array([[1, 2, 1, 0], [5, 5, 5, 5]], jnp.int32)
    out = fn(logits, cfg, history, jnp.array([3, 4]), jnp.array([1, 2]))
    assert out.shape == (2, 9) and out.dtype == jnp.float32
    assert np.isinf(np.asarray(out)[0, 2])  # bigram (1, 2) banned after the final 1
    with pytest.raises(ValueError, match="history"):
        process_logits(logits, cfg)
    with pytest.raises(ValueError, match="prompt_length"):
        process_logits(logits, SamplingConfig(presence_penalty=1.0), history, jnp.array([3, 4]))
    np.testing.assert_array_equal(np.asarray(process_logits(logits, SamplingConfig())), np.asarray(logits))


# ---------------------------------------------------------------- sampling


def test_greedy_sample_is_argmax():
    logits = jnp.asarray(np.random.default_rng(5).standard_normal((4, 11)), jnp.float32)
    cfg = SamplingConfig(temperature=0.0)
    tokens = sample_token(logits, cfg, jax.random.key(0))
    assert tokens.dtype == jnp.int32
    np.testing.assert_array_equal(np.asarray(tokens), np.argmax(np.asarray(logits), -1))


def test_sampling_is_deterministic_and_matches_warped_distribution():
    draws = 20_000
    logits_np = np.array([1.0, 0.5, 0.0, -0.5, -1.0, 2.0, -3.0, 0.2], np.float32)
    cfg = SamplingConfig(temperature=0.7, top_k=6, top_p=0.9)
    warped = np.asarray(warp_logits(jnp.asarray(logits_np)[None], cfg))[0]
    target = np_softmax(np.where(np.isfinite(warped), warped, -1e30))
    batch = jnp.broadcast_to(jnp.asarray(warped), (draws, warped.shape[0]))
    sample = jax.jit(sample_token, static_argnums=1)
    tokens = np.asarray(sample(batch, cfg, jax.random.key(7)))
    np.testing.assert_array_equal(tokens, np.asarray(sample(batch, cfg, jax.random.key(7))))
    assert not np.array_equal(tokens, np.asarray(sample(batch, cfg, jax.random.key(8))))
    assert set(tokens.tolist()) <= set(np.flatnonzero(np.isfinite(warped)).tolist())  # masked never drawn
    assert np.isinf(warped).sum() >= 2
    empirical = np.bincount(tokens, minlength=warped.shape[0]) / draws
    tv = 0.5 * np.abs(empirical - target).sum()
    assert tv < 0.02, (tv, empirical, target)


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"min_p": 1.0}, "min_p"),
        ({"min_p": -0.1}, "min_p"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"no_repeat_ngram": -1}, "no_repeat_ngram"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": float("nan")}, "top_p"),
        ({"presence_penalty": float("inf")}, "presence_penalty"),
        ({"frequency_penalty": "1"}, "frequency_penalty"),
        ({"top_k": True}, "top_k"),
    ],
)
def test_sampling_config_rejects_bad_values(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        SamplingConfig(**kwargs)


def test_sampling_config_messages_and_properties():
    with pytest.raises(ConfigError, match=r"top_p must be in \(0, 1\], got 1.5"):
        SamplingConfig(top_p=1.5)
    with pytest.raises(ConfigError, match=r"top_k must be >= 1 \(0 turns it off\)"):
        SamplingConfig(top_k=-1)
    cfg = SamplingConfig(temperature=0, top_k=5)
    assert cfg.greedy and not cfg.uses_history and cfg.warp_only()
    assert hash(cfg) == hash(SamplingConfig(temperature=0.0, top_k=5))
    for kwargs in (
        {"repetition_penalty": 1.1},
        {"presence_penalty": -0.5},
        {"frequency_penalty": 0.1},
        {"no_repeat_ngram": 3},
    ):
        cfg = SamplingConfig(**kwargs)
        assert cfg.uses_history and not cfg.warp_only() and not cfg.greedy
