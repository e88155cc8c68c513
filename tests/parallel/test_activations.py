"""Activation sharding constraints: present only inside an activation_sharding context."""

import jax
import jax.numpy as jnp
from flax import nnx

from lmx.config import MeshConfig, ModelConfig
from lmx.nn import Transformer
from lmx.parallel import make_mesh
from lmx.parallel.activations import activation_sharding, constrain, with_activation_sharding
from lmx.parallel.rules import STRATEGIES

CONFIG = ModelConfig(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, vocab_size=300, max_seq_len=16)


def _forward_hlo(wrap):
    graphdef, state = nnx.split(Transformer(CONFIG, rngs=nnx.Rngs(0)))
    fn = lambda state, tokens: nnx.merge(graphdef, state)(tokens)
    tokens = jnp.zeros((2, 8), jnp.int32)
    return jax.jit(wrap(fn)).lower(state, tokens).as_text()


def test_constrain_is_a_no_op_without_context():
    x = jnp.ones((2, 8, 32))
    assert constrain(x, ("batch", "seq", "embed")) is x
    assert _forward_hlo(lambda f: f).count("sharding_constraint") == 0


def test_block_boundaries_are_constrained_inside_the_context():
    mesh = make_mesh(MeshConfig(shape={"data": 1}))
    hlo = _forward_hlo(lambda f: with_activation_sharding(f, mesh, STRATEGIES["fsdp"]))
    assert hlo.count("sharding_constraint") >= 3  # after the embedding, in the scanned block body, after final norm


def test_indivisible_axes_are_dropped():
    mesh = make_mesh(MeshConfig(shape={"data": 1}))
    with activation_sharding(mesh, STRATEGIES["dp"]):
        y = jax.jit(lambda x: constrain(x, ("batch", "seq", "embed")))(jnp.ones((3, 4, 5)))
    assert y.shape == (3, 4, 5)
