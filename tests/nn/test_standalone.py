"""The building blocks compose inside a researcher's own NNX module (the docs/model.md example)."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmx.nn import MLP, Attention, Block, RMSNorm, logical_partition_specs

from .helpers import tiny_config


class ParallelBlock(nnx.Module):
    def __init__(self, d_model: int, *, rngs: nnx.Rngs):
        self.norm = RMSNorm(d_model, eps=1e-6, rngs=rngs)
        self.attn = Attention(d_model, n_heads=4, n_kv_heads=1, rngs=rngs)
        self.mlp = MLP(d_model, 4 * d_model, "geglu", rngs=rngs)

    def __call__(self, x_BxLxD):
        h_BxLxD = self.norm(x_BxLxD)
        positions_BxL = jnp.broadcast_to(jnp.arange(x_BxLxD.shape[1]), x_BxLxD.shape[:2])
        return x_BxLxD + self.attn(h_BxLxD, positions_BxL) + self.mlp(h_BxLxD)


def test_custom_module_forward_grad_and_specs():
    block = ParallelBlock(32, rngs=nnx.Rngs(1))
    x = jax.random.normal(jax.random.key(0), (2, 8, 32))
    loss_and_grads = nnx.jit(nnx.value_and_grad(lambda m, x: jnp.sum(m(x) ** 2)))
    loss, grads = loss_and_grads(block, x)
    assert bool(jnp.isfinite(loss))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    specs = logical_partition_specs(block)
    assert specs["attn"]["key"] == ("embed", "kv_heads", "head_dim")
    assert specs["mlp"]["gate"] == ("embed", "mlp")
    assert specs["norm"]["scale"] == ("embed",)


def test_block_standalone_default_positions():
    block = Block(tiny_config(), rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (1, 8, 32))
    forward = nnx.jit(lambda b, x, p=None: b(x, p))
    np.testing.assert_allclose(
        forward(block, x), forward(block, x, jnp.arange(8)[None]), rtol=1e-6, atol=1e-6
    )
    assert logical_partition_specs(block)["mixer"]["query"] == ("embed", "heads", "head_dim")
