"""Rotary position embedding in both memory layouts, partial rotation, and xPos.

RoPE (Su et al. 2021, arXiv:2104.09864) rotates pair i of the first d_rot = fraction * head_dim
features by the angle p * theta_i, theta_i = base^(-2i/d_rot); the remaining features pass through.
Layouts differ only in which features form a pair:
    half-split  (GPT-NeoX, Llama):  pair i = (x_i, x_{i + d_rot/2})
    interleaved (GPT-J, Meta):      pair i = (x_{2i}, x_{2i+1})
They are equal up to a fixed permutation of the q/k features (tested).
xPos (Sun et al. 2022, arXiv:2212.10554) additionally scales pair i of queries by
zeta_i^(p/gamma) and of keys by zeta_i^(-p/gamma), zeta_i = (2i + 0.4 d_rot) / (1.4 d_rot), so the
q.k term decays with distance; gamma (scale_base) is 512 in the paper's code.
All angles and scales are computed in float32; the output keeps x's dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lmx import registry


def rotary_dim(head_dim: int, fraction: float) -> int:
    d_rot = int(head_dim * fraction)
    return d_rot - d_rot % 2


class _Half:
    """Pair i = (x_i, x_{i + d/2})."""

    @staticmethod
    def spread(values_BxLxF):  # per-pair values [.., F] -> per-feature [.., 2F]
        return jnp.concatenate([values_BxLxF, values_BxLxF], axis=-1)

    @staticmethod
    def partner(x):  # the 90-degree partner: out = x cos + partner(x) sin
        half = x.shape[-1] // 2
        return jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)


class _Interleaved:
    """Pair i = (x_{2i}, x_{2i+1})."""

    @staticmethod
    def spread(values_BxLxF):
        return jnp.repeat(values_BxLxF, 2, axis=-1)

    @staticmethod
    def partner(x):
        pairs = x.reshape(*x.shape[:-1], -1, 2)
        return jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)


ROPE_LAYOUTS = registry.ROPE_LAYOUTS.register_all({"half": _Half, "interleaved": _Interleaved})


def apply_rotary(
    x_BxLxHxK: jax.Array,
    positions_BxL: jax.Array,
    theta: float = 10000.0,
    *,
    layout: str = "half",
    fraction: float = 1.0,
    xpos_scale_base: float | None = None,
    is_query: bool = True,
) -> jax.Array:
    """Rotate (and for xPos, scale) the first rotary_dim features of every head of x."""
    if layout not in ROPE_LAYOUTS:
        raise ValueError(f"unknown RoPE layout {layout!r}")
    pairs = ROPE_LAYOUTS[layout]
    d_rot = rotary_dim(x_BxLxHxK.shape[-1], fraction)
    if d_rot == 0:
        return x_BxLxHxK
    inv_freq_F = 1.0 / (theta ** (jnp.arange(0, d_rot, 2, dtype=jnp.float32) / d_rot))
    angles_BxLxF = positions_BxL.astype(jnp.float32)[..., None] * inv_freq_F
    cos = pairs.spread(jnp.cos(angles_BxLxF))[:, :, None, :]
    sin = pairs.spread(jnp.sin(angles_BxLxF))[:, :, None, :]
    x = x_BxLxHxK.astype(jnp.float32)
    x_rot, x_pass = x[..., :d_rot], x[..., d_rot:]
    out = x_rot * cos + pairs.partner(x_rot) * sin
    if xpos_scale_base is not None:
        zeta_F = (jnp.arange(0, d_rot, 2, dtype=jnp.float32) + 0.4 * d_rot) / (1.4 * d_rot)
        sign = 1.0 if is_query else -1.0
        exponent_BxLx1 = sign * positions_BxL.astype(jnp.float32)[..., None] / xpos_scale_base
        out = out * pairs.spread(zeta_F ** exponent_BxLx1)[:, :, None, :]
    return jnp.concatenate([out, x_pass], axis=-1).astype(x_BxLxHxK.dtype)
