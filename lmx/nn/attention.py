"""Causal grouped-query self-attention (GQA; Ainslie et al. 2023, arXiv:2305.13245).

N query heads share K key/value heads (N % K == 0; K == N is multi-head attention, K == 1 is
multi-query attention). With head dimension H:
    q = x Wq [embed, heads, head_dim],  k = x Wk, v = x Wv [embed, kv_heads, head_dim],
    q, k <- position(q), position(k)            (RoPE by default; see lmx.nn.positions)
    o_n = softmax(q_n k_g(n)^T / sqrt(H) + causal/segment mask) v_g(n),   g(n) = n // (N / K)
    y = o Wo [heads, head_dim, embed].           No biases.
The core is `jax.nn.dot_product_attention`, which takes GQA directly; its XLA path computes the
logits with float32 accumulation and the softmax in float32 even when q, k, v are bfloat16, and
cuDNN's fused kernel keeps softmax statistics in float32.

Standalone: `self.attn = Attention(d_model, n_heads, n_kv_heads, rngs=rngs)`, then
`y_BxLxD = self.attn(x_BxLxD, positions_BxL)`; pass `segment_ids_BxL` to keep packed documents from
attending to each other (a token attends to key j only if j <= i and segment_ids match).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lmx.nn.params import dtype_of, normal_param
from lmx.nn.positions import POSITIONS

# config.attention_impl -> the `implementation` argument of jax.nn.dot_product_attention
ATTENTION_IMPLS: dict[str, str | None] = {"xla": "xla", "cudnn": "cudnn", "auto": None}


def segment_mask(segment_ids_BxL: jax.Array) -> jax.Array:
    """Boolean (B, 1, L, L) mask, True where query i and key j lie in the same segment."""
    return (segment_ids_BxL[:, :, None] == segment_ids_BxL[:, None, :])[:, None, :, :]


class Attention(nnx.Module):
    """Causal GQA self-attention; see the module docstring for the formula and the parameters.

    Projections are initialised N(0, init_std^2) and the output projection N(0, out_std^2)
    (out_std defaults to init_std). Parameters are stored in `param_dtype`, matmuls run in
    `compute_dtype`, and the output has `compute_dtype`.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        head_dim: int | None = None,
        *,
        position: str = "rope",
        rope_theta: float = 10000.0,
        impl: str = "xla",
        init_std: float = 0.02,
        out_std: float | None = None,
        param_dtype=jnp.float32,
        compute_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        n_kv_heads = n_kv_heads or n_heads
        head_dim = head_dim or d_model // n_heads
        if n_heads % n_kv_heads:
            raise ValueError(f"n_kv_heads={n_kv_heads} must divide n_heads={n_heads}")
        if position not in POSITIONS:
            raise ValueError(f"unknown position {position!r}; choose one of {', '.join(POSITIONS)}")
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"unknown attention impl {impl!r}; choose one of {', '.join(ATTENTION_IMPLS)}")
        self.position = position
        self.rope_theta = rope_theta
        self.impl = impl
        self.compute_dtype = dtype_of(compute_dtype)
        out_std = init_std if out_std is None else out_std
        D, N, K, H = d_model, n_heads, n_kv_heads, head_dim
        self.query = normal_param(rngs, (D, N, H), ("embed", "heads", "head_dim"), init_std, param_dtype)
        self.key = normal_param(rngs, (D, K, H), ("embed", "kv_heads", "head_dim"), init_std, param_dtype)
        self.value = normal_param(rngs, (D, K, H), ("embed", "kv_heads", "head_dim"), init_std, param_dtype)
        self.out = normal_param(rngs, (N, H, D), ("heads", "head_dim", "embed"), out_std, param_dtype)

    def __call__(
        self,
        x_BxLxD: jax.Array,
        positions_BxL: jax.Array | None = None,
        segment_ids_BxL: jax.Array | None = None,
    ) -> jax.Array:
        cdt = self.compute_dtype
        B, L, _ = x_BxLxD.shape
        if positions_BxL is None:
            positions_BxL = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
        x_BxLxD = x_BxLxD.astype(cdt)
        q_BxLxNxH = jnp.einsum("bld,dnh->blnh", x_BxLxD, self.query[...].astype(cdt))
        k_BxLxKxH = jnp.einsum("bld,dkh->blkh", x_BxLxD, self.key[...].astype(cdt))
        v_BxLxKxH = jnp.einsum("bld,dkh->blkh", x_BxLxD, self.value[...].astype(cdt))
        encode = POSITIONS[self.position]
        q_BxLxNxH = encode(q_BxLxNxH, positions_BxL, self.rope_theta)
        k_BxLxKxH = encode(k_BxLxKxH, positions_BxL, self.rope_theta)
        mask_Bx1xLxL = None if segment_ids_BxL is None else segment_mask(segment_ids_BxL)
        o_BxLxNxH = jax.nn.dot_product_attention(
            q_BxLxNxH,
            k_BxLxKxH,
            v_BxLxKxH,
            mask=mask_Bx1xLxL,
            is_causal=True,
            implementation=ATTENTION_IMPLS[self.impl],
        )
        return jnp.einsum("blnh,nhd->bld", o_BxLxNxH, self.out[...].astype(cdt))
