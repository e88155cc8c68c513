"""Position schemes against independent NumPy transcriptions of their papers' formulas."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmx.nn.absolute_positions import BaseNPositions, base_n_digits, sinusoidal
from lmx.nn.position_bias import ShawRelative, T5RelativeBias, alibi_bias, alibi_slopes, t5_relative_bucket
from lmx.nn.rotary import apply_rotary


def test_alibi_slopes_match_the_published_values():
    np.testing.assert_allclose(alibi_slopes(8), [2.0**-k for k in range(1, 9)])
    twelve = [2.0**-k for k in range(1, 9)] + [2.0**-0.5, 2.0**-1.5, 2.0**-2.5, 2.0**-3.5]
    np.testing.assert_allclose(alibi_slopes(12), twelve)
    np.testing.assert_allclose(alibi_slopes(16), [2.0 ** (-0.5 * k) for k in range(1, 17)])


def test_alibi_bias_is_minus_slope_times_distance():
    pos = jnp.arange(5)[None]
    bias = np.asarray(alibi_bias(alibi_slopes(4), pos, pos))
    slopes = alibi_slopes(4)
    for h in range(4):
        for i in range(5):
            for j in range(i + 1):
                assert bias[0, h, i, j] == pytest.approx(-slopes[h] * (i - j))


def numpy_t5_bucket(rel: int, bidirectional: bool, num_buckets: int, max_distance: int) -> int:
    nb, offset = num_buckets, 0
    if bidirectional:
        nb //= 2
        offset = nb if rel > 0 else 0
        n = abs(rel)
    else:
        n = max(-rel, 0)
    exact = nb // 2
    if n < exact:
        return offset + n
    return offset + min(nb - 1, exact + int(math.log(n / exact) / math.log(max_distance / exact) * (nb - exact)))


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_buckets, max_distance", [(32, 128), (16, 64), (8, 20)])
def test_t5_buckets_match_numpy(bidirectional, num_buckets, max_distance):
    rel = np.arange(-300, 301)
    got = np.asarray(t5_relative_bucket(jnp.asarray(rel), bidirectional, num_buckets, max_distance))
    want = [numpy_t5_bucket(int(r), bidirectional, num_buckets, max_distance) for r in rel]
    np.testing.assert_array_equal(got, want)


def test_t5_bias_looks_up_the_table():
    rel = T5RelativeBias(3, 8, 20, bidirectional=False, rngs=nnx.Rngs(0))
    pos = jnp.arange(6)[None]
    bias = np.asarray(rel(pos, pos))
    table = np.asarray(rel.table[...])
    for i in range(6):
        for j in range(6):
            np.testing.assert_allclose(bias[0, :, i, j], table[numpy_t5_bucket(j - i, False, 8, 20)])


def test_shaw_terms_match_numpy_loops():
    shaw = ShawRelative(4, max_distance=2, rngs=nnx.Rngs(1))
    rng = np.random.default_rng(0)
    q = rng.normal(size=(1, 5, 2, 4)).astype(np.float32)
    p = rng.random((1, 2, 5, 5)).astype(np.float32)
    pos = jnp.arange(5)[None]
    keys, values = np.asarray(shaw.key_table[...]), np.asarray(shaw.value_table[...])
    logits = np.asarray(shaw.key_logits(jnp.asarray(q), pos, pos))
    term = np.asarray(shaw.value_term(jnp.asarray(p), pos, pos))
    for n in range(2):
        for i in range(5):
            for j in range(5):
                row = max(-2, min(2, j - i)) + 2
                assert logits[0, n, i, j] == pytest.approx(q[0, i, n] @ keys[row], rel=1e-5, abs=1e-6)
            want = sum(p[0, n, i, j] * values[max(-2, min(2, j - i)) + 2] for j in range(5))
            np.testing.assert_allclose(term[0, i, n], want, rtol=1e-5, atol=1e-6)


def numpy_rope_interleaved(x, positions, theta=10000.0):
    """Meta's complex form: view pairs (x_2i, x_2i+1) as complex numbers, multiply by e^{i p theta_i}."""
    d = x.shape[-1]
    freqs = theta ** (-np.arange(0, d, 2) / d)
    z = x[..., 0::2] + 1j * x[..., 1::2]
    z = z * np.exp(1j * positions[..., None, None] * freqs)
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def test_interleaved_rope_matches_complex_multiplication():
    x = np.random.default_rng(0).normal(size=(2, 7, 3, 8)).astype(np.float32)
    pos = np.broadcast_to(np.arange(7), (2, 7))
    got = apply_rotary(jnp.asarray(x), jnp.asarray(pos), layout="interleaved")
    np.testing.assert_allclose(np.asarray(got), numpy_rope_interleaved(x, pos), rtol=1e-5, atol=1e-5)


def test_half_split_and_interleaved_agree_under_the_feature_permutation():
    d = 8
    perm = np.concatenate([np.arange(0, d, 2), np.arange(1, d, 2)])  # interleaved index of half feature
    x_int = np.random.default_rng(1).normal(size=(1, 6, 2, d)).astype(np.float32)
    pos = jnp.arange(6)[None]
    out_int = np.asarray(apply_rotary(jnp.asarray(x_int), pos, layout="interleaved"))
    out_half = np.asarray(apply_rotary(jnp.asarray(x_int[..., perm]), pos, layout="half"))
    np.testing.assert_allclose(out_half, out_int[..., perm], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("xpos", [None, 512.0])
def test_rotary_scores_depend_only_on_distance(layout, xpos):
    rng = np.random.default_rng(2)
    q = jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(1, 1, 1, 16)), jnp.float32)

    def score(i, j):
        qi = apply_rotary(q, jnp.array([[i]]), layout=layout, xpos_scale_base=xpos, is_query=True)
        kj = apply_rotary(k, jnp.array([[j]]), layout=layout, xpos_scale_base=xpos, is_query=False)
        return float(jnp.sum(qi * kj))

    for i, j in [(5, 2), (9, 3), (40, 0)]:
        assert score(i, j) == pytest.approx(score(i + 17, j + 17), rel=1e-4, abs=1e-5)


def test_xpos_decays_with_distance_per_pair():
    d = 8
    zeta = (np.arange(0, d, 2) + 0.4 * d) / (1.4 * d)
    ones = jnp.ones((1, 1, 1, d))
    q = np.asarray(apply_rotary(ones, jnp.array([[0]]), layout="interleaved", xpos_scale_base=4.0))
    q3 = np.asarray(apply_rotary(ones, jnp.array([[3]]), layout="interleaved", xpos_scale_base=4.0, is_query=False))
    np.testing.assert_allclose(q[0, 0, 0], np.ones(d))  # position 0: no rotation, no scale
    norms = np.sqrt(q3[0, 0, 0, 0::2] ** 2 + q3[0, 0, 0, 1::2] ** 2)
    np.testing.assert_allclose(norms, np.sqrt(2) * zeta ** (-3 / 4.0), rtol=1e-5)


def test_partial_rotary_leaves_the_tail_unchanged():
    x = jnp.asarray(np.random.default_rng(3).normal(size=(1, 5, 2, 16)), jnp.float32)
    pos = jnp.arange(5)[None]
    out = apply_rotary(x, pos, fraction=0.25)
    np.testing.assert_array_equal(np.asarray(out[..., 4:]), np.asarray(x[..., 4:]))
    np.testing.assert_allclose(np.asarray(out[..., :4]), np.asarray(apply_rotary(x[..., :4], pos)), rtol=1e-6)


def test_sinusoidal_matches_the_formula():
    pe = np.asarray(sinusoidal(jnp.arange(9)[None], 6))[0]
    for p in range(9):
        for i in range(3):
            assert pe[p, 2 * i] == pytest.approx(math.sin(p / 10000 ** (2 * i / 6)), abs=1e-6)
            assert pe[p, 2 * i + 1] == pytest.approx(math.cos(p / 10000 ** (2 * i / 6)), abs=1e-6)


def test_base_n_digits_and_embedding():
    pos = jnp.asarray([[0, 7, 10, 99, 123]])
    digits = np.asarray(base_n_digits(pos, 10, 3))
    np.testing.assert_array_equal(digits[0], [[0, 0, 0], [7, 0, 0], [0, 1, 0], [9, 9, 0], [3, 2, 1]])
    module = BaseNPositions(1000, 4, base=10, rngs=nnx.Rngs(0))
    assert module.n_digits == 3
    tables = np.asarray(module.tables[...])
    got = np.asarray(module(pos))
    np.testing.assert_allclose(got[0, 4], tables[0, 3] + tables[1, 2] + tables[2, 1], rtol=1e-6)
    assert jax.numpy.isfinite(got).all()
