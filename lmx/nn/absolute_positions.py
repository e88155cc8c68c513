"""Absolute position signals added to the token embeddings at the input.

sinusoidal (Vaswani et al. 2017): PE(p, 2i) = sin(p / 10000^(2i/d)), PE(p, 2i+1) = cos(same).
learned (GPT-2): a trained [max_seq_len, d_model] table; positions >= max_seq_len are an error.
base_n: the position written in base B with n digits, p = sum_k d_k B^k; each digit place k has a
trained [B, d_model] table and the embedding is sum_k E_k[d_k] — a multi-scale code whose low
digits vary quickly and high digits slowly (lmx's learned-embedding reading of "Base-N" encodings).

Standalone: `pe = LearnedPositions(max_len, d_model, rngs=rngs)`; `h = tok_emb + pe(positions_BxL)`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from lmx.nn.params import normal_param


def sinusoidal(positions_BxL: jax.Array, d_model: int, base: float = 10000.0) -> jax.Array:
    """[B, L, d_model] float32 sinusoidal table rows (sin on even, cos on odd features)."""
    i = jnp.arange(0, d_model, 2, dtype=jnp.float32)
    angles = positions_BxL.astype(jnp.float32)[..., None] / (base ** (i / d_model))
    pe = jnp.zeros((*positions_BxL.shape, d_model), jnp.float32)
    pe = pe.at[..., 0::2].set(jnp.sin(angles))
    return pe.at[..., 1::2].set(jnp.cos(angles[..., : d_model // 2]))


class Sinusoidal(nnx.Module):
    def __init__(self, d_model: int, *, rngs: nnx.Rngs | None = None):
        self.d_model = d_model

    def __call__(self, positions_BxL):
        return sinusoidal(positions_BxL, self.d_model)


class LearnedPositions(nnx.Module):
    def __init__(self, max_len: int, d_model: int, *, init_std: float = 0.02, param_dtype="float32",
                 rngs: nnx.Rngs):
        self.max_len = max_len
        self.table = normal_param(rngs, (max_len, d_model), (None, "embed"), init_std, param_dtype)

    def __call__(self, positions_BxL):
        return jnp.take(self.table[...], positions_BxL, axis=0).astype(jnp.float32)


def base_n_digits(positions_BxL: jax.Array, base: int, n_digits: int) -> jax.Array:
    """[B, L, n_digits] digits d_k of each position in base `base`, least significant first."""
    powers = base ** jnp.arange(n_digits, dtype=jnp.int32)
    return (positions_BxL[..., None] // powers) % base


def base_n_num_digits(max_len: int, base: int) -> int:
    return max(1, math.ceil(math.log(max(max_len, 2), base) - 1e-9))


class BaseNPositions(nnx.Module):
    def __init__(self, max_len: int, d_model: int, base: int = 10, *, init_std: float = 0.02,
                 param_dtype="float32", rngs: nnx.Rngs):
        self.base = base
        self.n_digits = base_n_num_digits(max_len, base)
        self.tables = normal_param(rngs, (self.n_digits, base, d_model), (None, None, "embed"), init_std,
                                   param_dtype)

    def __call__(self, positions_BxL):
        digits = base_n_digits(positions_BxL, self.base, self.n_digits)  # [B, L, K]
        tables = self.tables[...].astype(jnp.float32)
        per_place = tables[jnp.arange(self.n_digits), digits]  # [B, L, K, D]
        return per_place.sum(axis=-2)
