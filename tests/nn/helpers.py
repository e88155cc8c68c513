"""Tiny configs and jitted forwards shared by the lmx.nn tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lmx.config import ModelConfig
from lmx.nn import Transformer

TINY = ModelConfig(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, vocab_size=300, max_seq_len=32)


def tiny_config(**overrides) -> ModelConfig:
    """TINY with overrides, nested keys written with `__` (position__kind="alibi")."""
    return TINY.replace(**overrides)


def build(config: ModelConfig, seed: int = 0) -> Transformer:
    return Transformer(config, rngs=nnx.Rngs(seed))


def forward_fn(model: Transformer):
    """jitted (state, tokens, positions, segment_ids) -> logits, plus the model's state."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, tokens, positions=None, segment_ids=None):
        return nnx.merge(graphdef, state)(tokens, positions, segment_ids)

    return forward, state


def random_tokens(seed: int, batch: int, length: int, vocab: int) -> jax.Array:
    return jax.random.randint(jax.random.key(seed), (batch, length), 0, vocab, dtype=jnp.int32)


def primitive_eqns(jaxpr, name: str) -> list:
    """Every equation of primitive `name` in a jaxpr, descending into sub-jaxprs (scan, jit, cond)."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == name:
            found.append(eqn)
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found += primitive_eqns(inner, name)
    return found
