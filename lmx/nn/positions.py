"""Position encodings applied to queries and keys, as pure functions.

RoPE (Su et al. 2021, arXiv:2104.09864) in the half-split layout of GPT-NeoX/Llama: the head
dimension K is split into halves (x1, x2) = (x[..., :K/2], x[..., K/2:]), and pair i is rotated by
the angle p * theta_i with theta_i = base^(-2i/K):
    out = concat(x1 * cos - x2 * sin, x2 * cos + x1 * sin).
Angles and the rotation are computed in float32; the result has x's dtype. Positions are explicit
(B, L) integer arrays so packed documents can restart them.

`POSITIONS` lists every `config.position.kind` name and where that scheme acts; "none" is NoPE
(Kazemnejad et al. 2023, arXiv:2305.19466). The general rotary function (both layouts, partial
rotation, xPos) is `lmx.nn.rotary.apply_rotary`; `apply_rope` here is its half-split special case.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lmx import registry


def rope_frequencies(head_dim: int, theta: float = 10000.0) -> jax.Array:
    """inv_freq[i] = theta^(-2i/head_dim) for i in [0, head_dim/2), float32 of shape (head_dim/2,)."""
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
    exponents = jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim
    return 1.0 / (theta**exponents)


def apply_rope(x_BxLxHxK: jax.Array, positions_BxL: jax.Array, theta: float = 10000.0) -> jax.Array:
    """Rotate every head of x by its token's position (half-split layout; see the module docstring)."""
    head_dim = x_BxLxHxK.shape[-1]
    inv_freq_F = rope_frequencies(head_dim, theta)  # F = K/2
    angles_BxLxF = positions_BxL.astype(jnp.float32)[..., None] * inv_freq_F
    cos_BxLx1xF = jnp.cos(angles_BxLxF)[:, :, None, :]
    sin_BxLx1xF = jnp.sin(angles_BxLxF)[:, :, None, :]
    x = x_BxLxHxK.astype(jnp.float32)
    x1_BxLxHxF, x2_BxLxHxF = x[..., : head_dim // 2], x[..., head_dim // 2 :]
    rotated = jnp.concatenate(
        [
            x1_BxLxHxF * cos_BxLx1xF - x2_BxLxHxF * sin_BxLx1xF,
            x2_BxLxHxF * cos_BxLx1xF + x1_BxLxHxF * sin_BxLx1xF,
        ],
        axis=-1,
    )
    return rotated.astype(x_BxLxHxK.dtype)


def no_position(x_BxLxHxK: jax.Array, positions_BxL: jax.Array, theta: float = 10000.0) -> jax.Array:
    """NoPE: no position signal beyond the causal mask; returns x unchanged."""
    del positions_BxL, theta
    return x_BxLxHxK


POSITIONS = registry.POSITIONS.register_all({
    # config.position.kind -> where the scheme acts (see lmx.nn.attention and lmx.nn.transformer)
    "none": "nowhere (NoPE)",
    "rope": "queries and keys (lmx.nn.rotary)",
    "xpos": "queries and keys (lmx.nn.rotary, with xPos scaling)",
    "alibi": "attention logits (lmx.nn.position_bias.alibi_bias)",
    "t5": "attention logits (lmx.nn.position_bias.T5RelativeBias, shared by layers)",
    "shaw": "attention keys and values (lmx.nn.position_bias.ShawRelative)",
    "sinusoidal": "input embeddings (lmx.nn.absolute_positions.sinusoidal)",
    "learned": "input embeddings (lmx.nn.absolute_positions.LearnedPositions)",
    "base_n": "input embeddings (lmx.nn.absolute_positions.BaseNPositions)",
})
