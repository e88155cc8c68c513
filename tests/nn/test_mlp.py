import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmx import registry
from lmx.nn import FFN_ACTIVATIONS, MLP, logical_names

from . import reference as ref


@pytest.mark.parametrize("name", sorted(FFN_ACTIVATIONS))
def test_ffn_matches_numpy(name):
    mlp = MLP(16, 24, name, init_std=0.3, rngs=nnx.Rngs(0))
    x = np.random.default_rng(0).normal(size=(2, 5, 16)).astype(np.float32)
    gate = np.asarray(mlp.gate[...], np.float64) if ref.FFN[name][1] else None
    expected = ref.ffn(
        x.astype(np.float64),
        name,
        np.asarray(mlp.up[...], np.float64),
        np.asarray(mlp.down[...], np.float64),
        gate,
    )
    np.testing.assert_allclose(mlp(jnp.asarray(x)), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(FFN_ACTIVATIONS))
def test_ffn_parameters(name):
    mlp = MLP(16, 24, name, rngs=nnx.Rngs(0))
    gated = FFN_ACTIVATIONS[name].gated
    assert gated == (name in ("swiglu", "geglu", "reglu", "glu"))
    assert hasattr(mlp, "gate") == gated
    assert mlp.up.shape == (16, 24) and mlp.down.shape == (24, 16)
    assert logical_names(mlp.up) == ("embed", "mlp") and logical_names(mlp.down) == ("mlp", "embed")


def test_gelu_is_exact_not_tanh():
    from lmx.nn.mlp import gelu

    x = np.linspace(-4, 4, 81)
    np.testing.assert_allclose(gelu(jnp.asarray(x, jnp.float32)), ref.gelu_exact(x), atol=1e-6)


def test_registry_matches_config():
    assert FFN_ACTIVATIONS is registry.FFN_ACTIVATIONS  # the table config validation reads
    with pytest.raises(ValueError):
        MLP(8, 8, "tanh", rngs=nnx.Rngs(0))
