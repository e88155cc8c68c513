"""Grouped-query attention (GQA; Ainslie et al. 2023, arXiv:2305.13245) with pluggable positions,
masks, kernels and kinds.

N query heads share K key/value heads (N % K == 0; K == N is multi-head attention, K == 1 is
multi-query attention). With head dimension H:
    q = x Wq [embed, heads, head_dim],  k = c Wk, v = c Wv [embed, kv_heads, head_dim]   (c = x, or the
                                                                                     encoder states for cross-attention)
    optional QK-norm: q, k <- RMSNorm over head_dim (Dehghani et al. 2023; OLMo 2)
    q, k <- RoPE / xPos (lmx.nn.rotary) for position in {rope, xpos}; other schemes act elsewhere:
            ALiBi and T5 arrive as an additive `bias`, Shaw adds its own key/value terms here,
            absolute schemes are added to the embeddings
    o = softmax(q k^T / sqrt(H) + bias, masked) v     (float32 softmax; lmx.nn.attention_kernels)
    y = o Wo [heads, head_dim, embed].   No biases.
`kind="linear"` replaces the softmax by a kernel feature map (lmx.nn.linear_attention).

Standalone: `self.attn = Attention(d_model, n_heads, n_kv_heads, rngs=rngs)`, then
`y_BxLxD = self.attn(x_BxLxD, positions_BxL)` (causal). Linear attention takes `valid_BxS` (real
keys) and `segment_ids_BxL` instead of a mask. Pass a boolean `mask` broadcastable to
[B, N, L, S] (lmx.nn.masks builds them) to replace the default causal mask, `bias` [B|1, N, L, S]
to add logits, `segment_ids_BxL` to keep packed documents apart, and `context_BxSxD` for
cross-attention.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lmx import registry
from lmx.nn import attention_kernels, precision
from lmx.nn import masks as mask_lib
from lmx.nn.params import constant_param, dtype_of, normal_param
from lmx.nn.position_bias import ShawRelative
from lmx.nn.rotary import apply_rotary

ATTENTION_IMPLS = registry.ATTENTION_KERNELS
ATTENTION_KINDS = registry.ATTENTION_KINDS.register_all({
    "softmax": "softmax(q k^T / sqrt(H) + bias) v (lmx.nn.attention_kernels)",
    "linear": "phi(q) (phi(k)^T v) (lmx.nn.linear_attention)",
})
ROTARY_POSITIONS = ("rope", "xpos")


def resolve_attention_impl(impl: str, compute_dtype, backend: str | None = None) -> str:
    """The kernel a plain causal softmax attention runs for `impl` on `backend` (see attention_kernels)."""
    sixteen_bit = jnp.dtype(dtype_of(compute_dtype)) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    request = attention_kernels.Request(mask="causal", sixteen_bit=sixteen_bit)
    return attention_kernels.choose_kernel(impl, request, backend, allow_interpret=True)


def segment_mask(segment_ids_BxL: jax.Array) -> jax.Array:
    """Boolean (B, 1, L, L) mask, True where query i and key j lie in the same segment."""
    return mask_lib.document(segment_ids_BxL, segment_ids_BxL)


def _rms(x, scale, eps):
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)
    return (y * scale.astype(jnp.float32)).astype(x.dtype)


class Attention(nnx.Module):
    """GQA attention; see the module docstring for the formula and the options.

    Projections are initialised N(0, init_std^2), the value projection N(0, value_std^2) and the
    output projection N(0, out_std^2) (both default to init_std; DeepNorm scales them by beta).
    Parameters are stored in `param_dtype`, matmuls run in `compute_dtype`.
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
        rope_layout: str = "half",
        rope_fraction: float = 1.0,
        xpos_scale_base: float = 512.0,
        shaw_max_distance: int = 16,
        impl: str = "xla",
        kind: str = "softmax",
        feature_map: str = "elu1",
        qk_norm: bool = False,
        norm_eps: float = 1e-6,
        cross: bool = False,
        init_std: float = 0.02,
        value_std: float | None = None,
        out_std: float | None = None,
        param_dtype=jnp.float32,
        compute_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        n_kv_heads = n_kv_heads or n_heads
        head_dim = head_dim or d_model // n_heads
        if n_heads % n_kv_heads:
            raise ValueError(f"n_kv_heads={n_kv_heads} must divide n_heads={n_heads}")
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"unknown attention impl {impl!r}; choose one of {', '.join(ATTENTION_IMPLS)}")
        self.position = position
        self.rope_theta, self.rope_layout, self.rope_fraction = rope_theta, rope_layout, rope_fraction
        self.xpos_scale_base = xpos_scale_base
        if kind == "linear":
            from lmx.nn.linear_attention import FEATURE_MAPS

            if feature_map not in FEATURE_MAPS:
                raise ValueError(f"unknown feature map {feature_map!r}; choose one of {', '.join(FEATURE_MAPS)}")
        self.impl, self.kind, self.feature_map = impl, kind, feature_map
        self.chunk_size, self.eps = 64, 1e-6  # linear attention: chunk of the causal scan, normaliser eps
        self.cross = cross
        self.norm_eps = norm_eps
        self.compute_dtype = dtype_of(compute_dtype)
        D, N, K, H = d_model, n_heads, n_kv_heads, head_dim
        self.query = normal_param(rngs, (D, N, H), ("embed", "heads", "head_dim"), init_std, param_dtype)
        self.key = normal_param(rngs, (D, K, H), ("embed", "kv_heads", "head_dim"), init_std, param_dtype)
        self.value = normal_param(rngs, (D, K, H), ("embed", "kv_heads", "head_dim"),
                                  init_std if value_std is None else value_std, param_dtype)
        self.out = normal_param(rngs, (N, H, D), ("heads", "head_dim", "embed"),
                                init_std if out_std is None else out_std, param_dtype)
        self.q_norm = constant_param(1.0, (H,), ("head_dim",), param_dtype) if qk_norm else None
        self.k_norm = constant_param(1.0, (H,), ("head_dim",), param_dtype) if qk_norm else None
        self.shaw = ShawRelative(H, shaw_max_distance, init_std=init_std, rngs=rngs) \
            if position == "shaw" and not cross else None

    def _rotate(self, x, positions, is_query):
        if self.cross or self.position not in ROTARY_POSITIONS:
            return x
        xpos = self.xpos_scale_base if self.position == "xpos" else None
        return apply_rotary(x, positions, self.rope_theta, layout=self.rope_layout, fraction=self.rope_fraction,
                            xpos_scale_base=xpos, is_query=is_query)

    def __call__(
        self,
        x_BxLxD: jax.Array,
        positions_BxL: jax.Array | None = None,
        segment_ids_BxL: jax.Array | None = None,
        *,
        mask=None,
        bias=None,
        causal: bool = True,
        mask_kind: str | None = None,
        window: int = 0,
        context_BxSxD: jax.Array | None = None,
        context_positions_BxS: jax.Array | None = None,
        valid_BxS: jax.Array | None = None,
    ) -> jax.Array:
        cdt = self.compute_dtype
        B, L, _ = x_BxLxD.shape
        if positions_BxL is None:
            positions_BxL = mask_lib.default_positions(B, L)
        source = x_BxLxD if context_BxSxD is None else context_BxSxD
        k_positions = positions_BxL if context_BxSxD is None else (
            context_positions_BxS if context_positions_BxS is not None
            else mask_lib.default_positions(B, source.shape[1]))
        q_BxLxNxH = self.project_queries(x_BxLxD, positions_BxL)
        k_BxSxKxH, v_BxSxKxH = self.project_keys_values(source, k_positions)
        if self.kind == "linear":
            o_BxLxNxH = self._linear(q_BxLxNxH, k_BxSxKxH, v_BxSxKxH, causal and context_BxSxD is None,
                                     segment_ids_BxL, valid_BxS)
        else:
            o_BxLxNxH = self._softmax(q_BxLxNxH, k_BxSxKxH, v_BxSxKxH, positions_BxL, k_positions,
                                      segment_ids_BxL, mask, bias, causal, mask_kind, window)
        return precision.einsum("blnh,nhd->bld", o_BxLxNxH, self.out[...], cdt)

    def project_queries(self, x_BxLxD, positions_BxL) -> jax.Array:
        """q [B, L, N, H]: projected, QK-normed and rotated by position."""
        cdt = self.compute_dtype
        q_BxLxNxH = precision.einsum("bld,dnh->blnh", x_BxLxD, self.query[...], cdt)
        if self.q_norm is not None:
            q_BxLxNxH = _rms(q_BxLxNxH, self.q_norm[...], self.norm_eps)
        return self._rotate(q_BxLxNxH, positions_BxL, True)

    def project_keys_values(self, source_BxSxD, positions_BxS):
        """(k, v) [B, S, K, H] as a KV cache stores them: projected, k QK-normed and rotated."""
        cdt = self.compute_dtype
        source_BxSxD = source_BxSxD.astype(cdt)
        k_BxSxKxH = precision.einsum("bsd,dkh->bskh", source_BxSxD, self.key[...], cdt)
        v_BxSxKxH = precision.einsum("bsd,dkh->bskh", source_BxSxD, self.value[...], cdt)
        if self.k_norm is not None:
            k_BxSxKxH = _rms(k_BxSxKxH, self.k_norm[...], self.norm_eps)
        return self._rotate(k_BxSxKxH, positions_BxS, False), v_BxSxKxH

    def attend(self, q_BxLxNxH, k_BxSxKxH, v_BxSxKxH, *, mask, bias=None, q_positions=None,
               k_positions=None, cached_kv=None) -> jax.Array:
        """y [B, L, D] from projected q and the given keys/values under an explicit mask. For
        incremental decoding (lmx.nn.kv_cache), `cached_kv` = (k, v) of the cache, in its layouts
        (keys [B, K, H, C], values [B, K, C, H]), precede the given keys on the key axis (mask, bias and
        k_positions cover both; k and v may be None when the cache already holds the new tokens)."""
        parts = [] if k_BxSxKxH is None else [
            (attention_kernels.keys_transposed(k_BxSxKxH), v_BxSxKxH.transpose(0, 2, 1, 3))]
        if cached_kv is not None:
            parts = [cached_kv, *parts]
        if self.kind == "linear":  # back to [B, S, K, H]
            keys = jnp.concatenate([k.transpose(0, 3, 1, 2).astype(jnp.float32) for k, _ in parts], axis=1)
            values = jnp.concatenate([v.transpose(0, 2, 1, 3).astype(jnp.float32) for _, v in parts], axis=1)
            o_BxLxNxH = _masked_linear(q_BxLxNxH, keys, values, mask, self.feature_map, self.eps)
        else:
            o_BxLxNxH = attention_kernels.plain_parts(q_BxLxNxH, parts, mask=mask, bias=bias, shaw=self.shaw,
                                                      q_positions=q_positions, k_positions=k_positions)
        return self.project_out(o_BxLxNxH)

    def project_out(self, o_BxLxNxH) -> jax.Array:
        """y [B, L, D] = o W_out with heads and head dims contracted as one axis. (Written as
        "blnh,nhd->bld", XLA on CPU transposed the [N, H, D] weight rather than the one-token
        activation, a weight copy at every step of a decode loop.)"""
        B, L, N, H = o_BxLxNxH.shape
        cdt = self.compute_dtype
        w_FxD = self.out[...].astype(cdt).reshape(N * H, -1)
        return precision.einsum("blf,fd->bld", o_BxLxNxH.reshape(B, L, N * H), w_FxD, cdt)

    def extend_linear(self, q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, state: dict | None, valid_BxT=None):
        """Causal linear attention of T new tokens continuing the recurrent state {"S": sum phi(k) v^T
        [B, N, H, H], "z": sum phi(k) [B, N, H]} (None: empty); returns (y [B, T, D], S, z). Invalid
        (padding) tokens add nothing to the state. Decoding costs O(1) per token in the context length."""
        from lmx.nn.linear_attention import _features, causal_linear_attention

        fq, fk, v = _features(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, self.feature_map, valid_BxT)
        S_add = jnp.einsum("btnh,btnm->bnhm", fk, v)
        z_add = fk.sum(axis=1)
        if state is None:  # prefill: the chunked causal scan from an empty state
            chunk = None if self.chunk_size is None else min(self.chunk_size, q_BxTxNxH.shape[1])
            o = causal_linear_attention(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, feature_map=self.feature_map, eps=self.eps,
                                        k_valid_BxL=valid_BxT, chunk_size=chunk).astype(jnp.float32)
            S, z = S_add, z_add
        else:  # the state's contribution plus a causal quadratic form over the T new tokens
            T = q_BxTxNxH.shape[1]
            w_BxNxTxT = jnp.einsum("btnh,bsnh->bnts", fq, fk) * jnp.tril(jnp.ones((T, T), jnp.float32))
            num = jnp.einsum("btnh,bnhm->btnm", fq, state["S"]) + jnp.einsum("bnts,bsnm->btnm", w_BxNxTxT, v)
            den = jnp.einsum("btnh,bnh->btn", fq, state["z"]) + jnp.einsum("bnts->btn", w_BxNxTxT)
            o = num / (den[..., None] + self.eps)
            S, z = state["S"] + S_add, state["z"] + z_add
        y = self.project_out(o)
        return y, S, z

    def _linear(self, q, k, v, causal: bool, segment_ids, valid):
        """Linear attention; `valid` drops padding keys, `segment_ids` restart the causal state."""
        from lmx.nn import linear_attention

        if causal:  # chunked scan: a masked C x C form inside chunks, the running state across them
            chunk = None if self.chunk_size is None else min(self.chunk_size, q.shape[1])
            return linear_attention.causal_linear_attention(q, k, v, feature_map=self.feature_map, eps=self.eps,
                                                            k_valid_BxL=valid, segment_ids_BxL=segment_ids,
                                                            chunk_size=chunk)
        if segment_ids is not None:
            raise ValueError("bidirectional linear attention cannot keep packed documents apart (segment_ids)")
        return linear_attention.bidirectional_linear_attention(q, k, v, feature_map=self.feature_map, eps=self.eps,
                                                               k_valid_BxL=valid)

    def _softmax(self, q, k, v, q_positions, k_positions, segment_ids, mask, bias, causal, mask_kind, window):
        if mask is None:
            if causal:
                mask = mask_lib.causal(q_positions, k_positions)
            mask = mask_lib.combine(mask, None if segment_ids is None else segment_mask(segment_ids))
            if mask_kind is None:
                mask_kind = "dynamic" if segment_ids is not None else ("causal" if causal else "bidirectional")
        mask_kind = mask_kind or "dynamic"
        request = attention_kernels.Request(
            mask=mask_kind, window=window, has_bias=bias is not None, shaw=self.shaw is not None,
            sixteen_bit=jnp.dtype(self.compute_dtype) != jnp.dtype(jnp.float32),
        )
        kernel = attention_kernels.choose_kernel(self.impl, request)
        if kernel == "splash":
            return attention_kernels.splash(q, k, v, mask_kind=mask_kind, window=window)
        return attention_kernels.KERNELS[kernel](q, k, v, mask=mask, bias=bias, shaw=self.shaw,
                                                 q_positions=q_positions, k_positions=k_positions)


def _masked_linear(q_BxLxNxH, k_BxSxKxH, v_BxSxKxH, mask, feature_map: str, eps: float):
    """Linear attention in its quadratic form under a mask: o_i = sum_j m_ij w_ij v_j / (sum_j m_ij w_ij
    + eps), w_ij = phi(q_i) . phi(k_j) — the same sums the causal scan accumulates (decoding path)."""
    from lmx.nn.linear_attention import _features

    fq, fk, v = _features(q_BxLxNxH, k_BxSxKxH, v_BxSxKxH, feature_map, None)
    w_BxNxLxS = jnp.einsum("blnh,bsnh->bnls", fq, fk)
    w_BxNxLxS = jnp.where(mask, w_BxNxLxS, 0.0)
    num_BxLxNxH = jnp.einsum("bnls,bsnh->blnh", w_BxNxLxS, v)
    den_BxLxN = jnp.einsum("bnls->bln", w_BxNxLxS)
    return (num_BxLxNxH / (den_BxLxN[..., None] + eps)).astype(q_BxLxNxH.dtype)
