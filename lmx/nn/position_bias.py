"""Position information added to attention logits (and, for Shaw, to values).

ALiBi (Press, Smith & Lewis 2022, arXiv:2108.12409): score_ij += -m_h (i - j) for j <= i, with fixed
slopes m_h = 2^(-8h/n) for n heads a power of two; otherwise the n' = 2^floor(log2 n) slopes of an
n'-head model followed by every other slope (1st, 3rd, ...) of a 2n'-head model. Not scaled by
1/sqrt(d). Bidirectional use takes -m_h |i - j|.

T5 relative bias (Raffel et al. 2020): a learned scalar per (bucket, head), bucket(j - i) exact for
small distances and log-spaced up to max_distance; bidirectional buckets split the range by sign.
One table is shared by all layers.

Shaw et al. 2018 (arXiv:1803.02155): learned vectors a^K, a^V for the clipped distance
clip(j - i, -k, k): e_ij = q_i . (k_j + a^K_ij) / sqrt(d), z_i = sum_j p_ij (v_j + a^V_ij).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmx.nn.params import normal_param


def alibi_slopes(n_heads: int) -> np.ndarray:
    """The per-head ALiBi slopes (float64 numpy, head order)."""

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (h + 1) for h in range(n)]

    if n_heads & (n_heads - 1) == 0:
        return np.array(power_of_two(n_heads))
    base = 2 ** math.floor(math.log2(n_heads))
    extra = power_of_two(2 * base)[0::2][: n_heads - base]
    return np.array(power_of_two(base) + extra)


def alibi_bias(slopes_H, q_positions_BxL, k_positions_BxS, causal: bool = True) -> jax.Array:
    """[B, H, L, S] float32 bias: -m_h (i - j) (causal) or -m_h |i - j| (bidirectional)."""
    distance = (q_positions_BxL[:, None, :, None] - k_positions_BxS[:, None, None, :]).astype(jnp.float32)
    distance = distance if causal else jnp.abs(distance)
    return -jnp.asarray(slopes_H, jnp.float32)[None, :, None, None] * distance


def t5_relative_bucket(relative_position, bidirectional: bool, num_buckets: int, max_distance: int):
    """Bucket of relative_position = key - query (integer array), as in T5."""
    relative_position = jnp.asarray(relative_position, jnp.int32)
    if bidirectional:
        num_buckets //= 2
        offset = jnp.where(relative_position > 0, num_buckets, 0)
        n = jnp.abs(relative_position)
    else:
        offset = 0
        n = jnp.maximum(-relative_position, 0)
    max_exact = num_buckets // 2
    # log-spaced buckets; max(n, 1) keeps log finite where the exact branch is taken anyway
    scaled = jnp.log(jnp.maximum(n, 1).astype(jnp.float32) / max_exact) / math.log(max_distance / max_exact)
    large = jnp.minimum(max_exact + (scaled * (num_buckets - max_exact)).astype(jnp.int32), num_buckets - 1)
    return offset + jnp.where(n < max_exact, n, large)


class T5RelativeBias(nnx.Module):
    """Learned [num_buckets, heads] table; `bias(q_pos_BxL, k_pos_BxS) -> [B, H, L, S]` float32.

    Standalone: `rel = T5RelativeBias(n_heads, 32, 128, bidirectional=False, rngs=rngs)`; add
    `rel(q_pos, k_pos)` to the attention logits of every layer (the table is shared).
    """

    def __init__(self, n_heads: int, num_buckets: int = 32, max_distance: int = 128, *,
                 bidirectional: bool, init_std: float = 0.02, rngs: nnx.Rngs):
        self.num_buckets, self.max_distance, self.bidirectional = num_buckets, max_distance, bidirectional
        self.table = normal_param(rngs, (num_buckets, n_heads), (None, "heads"), init_std, jnp.float32)

    def __call__(self, q_positions_BxL, k_positions_BxS) -> jax.Array:
        relative = k_positions_BxS[:, None, :] - q_positions_BxL[:, :, None]  # [B, L, S]
        buckets = t5_relative_bucket(relative, self.bidirectional, self.num_buckets, self.max_distance)
        return jnp.take(self.table[...].astype(jnp.float32), buckets, axis=0).transpose(0, 3, 1, 2)


class ShawRelative(nnx.Module):
    """Clipped relative-position key and value vectors (Shaw et al. 2018), shared by the heads.

    `key_logits(q_BxLxNxH, q_pos, k_pos) -> [B, N, L, S]` is the extra q_i . a^K_ij term (before
    the 1/sqrt(H) scale); `value_term(p_BxNxLxS, q_pos, k_pos) -> [B, L, N, H]` is sum_j p_ij a^V_ij.
    """

    def __init__(self, head_dim: int, max_distance: int = 16, *, init_std: float = 0.02, rngs: nnx.Rngs):
        self.max_distance = max_distance
        rows = 2 * max_distance + 1
        self.key_table = normal_param(rngs, (rows, head_dim), (None, "head_dim"), init_std, jnp.float32)
        self.value_table = normal_param(rngs, (rows, head_dim), (None, "head_dim"), init_std, jnp.float32)

    def _index(self, q_positions_BxL, k_positions_BxS):
        relative = k_positions_BxS[:, None, :] - q_positions_BxL[:, :, None]
        return jnp.clip(relative, -self.max_distance, self.max_distance) + self.max_distance  # [B, L, S]

    def key_logits(self, q_BxLxNxH, q_positions_BxL, k_positions_BxS) -> jax.Array:
        a_BxLxSxH = jnp.take(self.key_table[...], self._index(q_positions_BxL, k_positions_BxS), axis=0)
        return jnp.einsum("blnh,blsh->bnls", q_BxLxNxH.astype(jnp.float32), a_BxLxSxH)

    def value_term(self, probs_BxNxLxS, q_positions_BxL, k_positions_BxS) -> jax.Array:
        a_BxLxSxH = jnp.take(self.value_table[...], self._index(q_positions_BxL, k_positions_BxS), axis=0)
        return jnp.einsum("bnls,blsh->blnh", probs_BxNxLxS.astype(jnp.float32), a_BxLxSxH)
