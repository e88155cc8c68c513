import jax.numpy as jnp
import numpy as np
import pytest

from lmx import registry
from lmx.nn import NORMS, LayerNorm, RMSNorm

from . import reference as ref


def _inputs(seed=0, shape=(2, 5, 16)):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape).astype(np.float32) * 3 + 0.5, rng.normal(size=shape[-1:]).astype(np.float32)


def test_rmsnorm_matches_numpy():
    x, scale = _inputs()
    norm = RMSNorm(16, eps=1e-5)
    norm.scale[...] = jnp.asarray(scale)
    np.testing.assert_allclose(norm(jnp.asarray(x)), ref.rmsnorm(x, scale, 1e-5), rtol=1e-5, atol=1e-5)


def test_layernorm_matches_numpy():
    x, scale = _inputs(1)
    bias = np.linspace(-1, 1, 16).astype(np.float32)
    norm = LayerNorm(16, eps=1e-6)
    norm.scale[...] = jnp.asarray(scale)
    norm.bias[...] = jnp.asarray(bias)
    np.testing.assert_allclose(
        norm(jnp.asarray(x)), ref.layernorm(x, scale, bias, 1e-6), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("name", sorted(NORMS))
def test_norm_bf16_in_bf16_out_computed_in_float32(name):
    x, _ = _inputs(2)
    norm = NORMS[name](16, 1e-5)
    y = norm(jnp.asarray(x, jnp.bfloat16))
    assert y.dtype == jnp.bfloat16
    # the float32 result rounded once to bf16: computing in bf16 would drift further
    expected = norm(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32)).astype(jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(expected, np.float32))


def test_norm_params_and_registry():
    assert NORMS is registry.NORMS  # the table config validation reads
    assert RMSNorm(8).scale.shape == (8,)
    ln = LayerNorm(8)
    assert (ln.scale.shape, ln.bias.shape) == ((8,), (8,))
    assert float(jnp.sum(ln.bias[...])) == 0.0 and float(jnp.sum(ln.scale[...])) == 8.0


def test_norm_param_dtype():
    norm = RMSNorm(8, param_dtype=jnp.bfloat16)
    assert norm.scale.dtype == jnp.bfloat16
    assert norm(jnp.ones((1, 2, 8), jnp.float32)).dtype == jnp.float32
