"""Attention masks as boolean arrays broadcastable to [batch, heads, queries, keys] (True = may attend).

Every builder works on explicit positions, so the same mask serves training (queries = keys),
evaluation, and incremental decoding with a KV cache (queries are the newest positions). Masks
combine with `combine` (logical and).

causal            key position <= query position
bidirectional     everything (encoders)
prefix_lm         key in the prefix (bidirectional part), or causal (Raffel et al. 2020, sec. 3.2.1)
padding           key is a real token
document          key and query lie in the same packed document (segment id)
sliding_window    causal and query - key < window (Beltagy et al. 2020; Mistral)
block_sparse      causal and (local window, or key is a strided "summary" column, or either side
                  is one of the first `n_global` tokens) — the fixed pattern of Child et al. 2019
                  plus global tokens as in Longformer/BigBird
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lmx import registry


def _grid(q_positions_BxL: jax.Array, k_positions_BxS: jax.Array):
    """Query and key positions as [B, 1, L, 1] and [B, 1, 1, S]."""
    return q_positions_BxL[:, None, :, None], k_positions_BxS[:, None, None, :]


def causal(q_positions_BxL, k_positions_BxS):
    q, k = _grid(q_positions_BxL, k_positions_BxS)
    return k <= q


def bidirectional(q_positions_BxL, k_positions_BxS):
    q, k = _grid(q_positions_BxL, k_positions_BxS)
    return jnp.ones(jnp.broadcast_shapes(q.shape, k.shape), bool)


def prefix_lm(q_positions_BxL, k_positions_BxS, prefix_len_B):
    """Causal, except that every query sees the whole prefix (keys with position < prefix_len)."""
    q, k = _grid(q_positions_BxL, k_positions_BxS)
    return (k <= q) | (k < prefix_len_B[:, None, None, None])


def padding(k_valid_BxS):
    """[B, 1, 1, S]: keys that are real tokens."""
    return k_valid_BxS.astype(bool)[:, None, None, :]


def document(q_segment_ids_BxL, k_segment_ids_BxS):
    """[B, 1, L, S]: same packed document."""
    return q_segment_ids_BxL[:, None, :, None] == k_segment_ids_BxS[:, None, None, :]


def sliding_window(q_positions_BxL, k_positions_BxS, window: int):
    q, k = _grid(q_positions_BxL, k_positions_BxS)
    return (k <= q) & (q - k < window)


def block_sparse(q_positions_BxL, k_positions_BxS, window: int, stride: int, n_global: int):
    q, k = _grid(q_positions_BxL, k_positions_BxS)
    local = q - k < window
    strided = (k % stride) == (stride - 1)
    global_ = (k < n_global) | (q < n_global)
    return (k <= q) & (local | strided | global_)


def combine(*masks):
    """Logical and of masks (None entries are ignored); None if every entry is None."""
    present = [m for m in masks if m is not None]
    if not present:
        return None
    out = present[0]
    for mask in present[1:]:
        out = out & mask
    return out


def as_bias(mask, dtype=jnp.float32) -> jax.Array:
    """0 where allowed, a large negative number where masked (finite, so fully masked rows stay finite)."""
    return jnp.where(mask, jnp.zeros((), dtype), jnp.asarray(jnp.finfo(dtype).min / 2, dtype))


MASKS = {
    "causal": causal,
    "bidirectional": bidirectional,
}


def _dense_causal(q_positions_BxL, k_positions_BxS, attention):
    del attention
    return causal(q_positions_BxL, k_positions_BxS), "causal"


def _sliding_window_causal(q_positions_BxL, k_positions_BxS, attention):
    return sliding_window(q_positions_BxL, k_positions_BxS, attention.window), "sliding_window"


def _block_sparse_causal(q_positions_BxL, k_positions_BxS, attention):
    mask = block_sparse(q_positions_BxL, k_positions_BxS, attention.window, attention.stride, attention.global_tokens)
    return mask, "dynamic"


# model.attention.pattern -> (q_positions, k_positions, attention config) -> (causal mask, kernel hint)
ATTENTION_PATTERNS = registry.ATTENTION_PATTERNS.register_all({
    "dense": _dense_causal,
    "sliding_window": _sliding_window_causal,
    "block_sparse": _block_sparse_causal,
})


def default_positions(batch: int, length: int, offset: int | jax.Array = 0) -> jax.Array:
    return jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32) + offset, (batch, length))


__all__ = [
    "MASKS", "as_bias", "bidirectional", "block_sparse", "causal", "combine", "default_positions",
    "document", "padding", "prefix_lm", "sliding_window",
]

