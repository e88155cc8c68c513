import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmx import registry
from lmx.nn import POSITIONS, apply_rope, rope_frequencies

from . import reference as ref

B, L, H, K = 2, 12, 3, 16


def test_rope_frequencies_formula():
    inv = np.asarray(rope_frequencies(K, 500.0))
    expected = np.array([500.0 ** (-2 * i / K) for i in range(K // 2)])
    assert inv.dtype == np.float32
    np.testing.assert_allclose(inv, expected, rtol=1e-6)
    with pytest.raises(ValueError):
        rope_frequencies(7, 10000.0)


@pytest.mark.parametrize("base", [10000.0, 100.0])
def test_rope_matches_numpy_transcription(base):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(B, L, H, K)).astype(np.float32)
    positions = rng.integers(0, 200, size=(B, L)).astype(np.int32)
    got = apply_rope(jnp.asarray(x), jnp.asarray(positions), base)
    np.testing.assert_allclose(got, ref.rope(x, positions, base), rtol=1e-4, atol=1e-4)


def test_rope_keeps_dtype_and_position_zero_is_identity():
    x = jax.random.normal(jax.random.key(0), (B, L, H, K), jnp.bfloat16)
    assert apply_rope(x, jnp.zeros((B, L), jnp.int32)).dtype == jnp.bfloat16
    np.testing.assert_array_equal(apply_rope(x, jnp.zeros((B, L), jnp.int32)), x)


_score = jax.jit(lambda q, k, pq, pk: jnp.sum(apply_rope(q, pq) * apply_rope(k, pk)))


@settings(max_examples=25, deadline=None)
@given(i=st.integers(0, 64), j=st.integers(0, 64), shift=st.integers(-64, 512), seed=st.integers(0, 3))
def test_rope_scores_depend_only_on_relative_position(i, j, shift, seed):
    q = jax.random.normal(jax.random.key(seed), (1, 1, 1, K))
    k = jax.random.normal(jax.random.key(seed + 100), (1, 1, 1, K))
    pos = lambda p: jnp.full((1, 1), p, jnp.int32)
    base = _score(q, k, pos(i), pos(j))
    shifted = _score(q, k, pos(i + shift), pos(j + shift))
    np.testing.assert_allclose(shifted, base, rtol=1e-3, atol=1e-3)


def test_positions_registry():
    assert POSITIONS is registry.POSITIONS  # the table config validation reads
    assert all(isinstance(where, str) and where for where in POSITIONS.values())
