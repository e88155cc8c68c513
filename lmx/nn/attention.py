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
from lmx.config import ModelConfig
from lmx.nn import attention_kernels, precision
from lmx.nn import masks as mask_lib
from lmx.nn.kv_cache import CrossKV, LinearAttentionState, write_kv
from lmx.nn.layer_inputs import LayerCache, LayerInputs, MaskKind
from lmx.nn.linear_attention import FEATURE_MAPS, continue_causal_linear, linear_attention
from lmx.nn.params import constant_param, dtype_of, normal_param
from lmx.nn.position_bias import ShawRelative
from lmx.nn.rotary import apply_rotary

ATTENTION_IMPLS = registry.ATTENTION_KERNELS  # model.attention.kernel
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
        if kind == "linear" and feature_map not in FEATURE_MAPS:
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

    @classmethod
    def from_config(cls, config: ModelConfig, *, cross: bool = False, init_std: float, value_std: float,
                    out_std: float, rngs: nnx.Rngs) -> Attention:
        """The attention of a model layer: takes `model.attention` and `model.position` whole."""
        attention, position = config.attention, config.position
        return cls(config.d_model, config.n_heads, config.n_kv_heads, config.resolved_head_dim,
                   position="none" if cross else position.kind, rope_theta=position.rope.theta,
                   rope_layout=position.rope.layout, rope_fraction=position.rope.fraction,
                   xpos_scale_base=position.xpos.scale_base, shaw_max_distance=position.shaw.max_distance,
                   impl=attention.kernel, kind="softmax" if cross else attention.kind,
                   feature_map=attention.feature_map, qk_norm=attention.qk_norm, norm_eps=config.norm.eps, cross=cross,
                   init_std=init_std, value_std=value_std, out_std=out_std, param_dtype=config.param_dtype,
                   compute_dtype=config.compute_dtype, rngs=rngs)

    def _rotate(self, x, positions, is_query):
        if self.cross or self.position not in ROTARY_POSITIONS:
            return x
        xpos = self.xpos_scale_base if self.position == "xpos" else None
        return apply_rotary(x, positions, self.rope_theta, layout=self.rope_layout, fraction=self.rope_fraction,
                            xpos_scale_base=xpos, is_query=is_query)

    def __call__(
        self,
        x_BxLxD: jax.Array,
        inputs: LayerInputs | jax.Array | None = None,
        segment_ids_BxL: jax.Array | None = None,
        *,
        cache: LayerCache | None = None,
        mask=None,
        bias=None,
        causal: bool = True,
        mask_kind: str | None = None,
        window: int = 0,
        context_BxSxD: jax.Array | None = None,
        context_positions_BxS: jax.Array | None = None,
        valid_BxS: jax.Array | None = None,
    ):
        """y [B, L, D]; with a `cache` (lmx.nn.kv_cache.LayerCache), (y, the new cache state).

        `inputs` is a LayerInputs (what a stack passes), or just positions [B, L] / None (0..L-1)
        completed by the keyword arguments (standalone use). Training, prefill and decoding run this
        same code: a cache only changes where the keys come from and adds the write."""
        if not isinstance(inputs, LayerInputs):
            inputs = LayerInputs.standalone(x_BxLxD, inputs, segment_ids_BxL, mask=mask, bias=bias, causal=causal,
                                            mask_kind=mask_kind, window=window, valid=valid_BxS,
                                            context=context_BxSxD, context_positions=context_positions_BxS)
        q_BxLxNxH = self.project_queries(x_BxLxD, inputs.positions)
        if self.cross:
            o_BxLxNxH, state = self._cross(q_BxLxNxH, inputs, cache)
        else:
            k_BxSxKxH, v_BxSxKxH = self.project_keys_values(x_BxLxD, inputs.positions)
            o_BxLxNxH, state = ATTENTION_KINDS[self.kind](self, q_BxLxNxH, k_BxSxKxH, v_BxSxKxH, inputs, cache)
        y_BxLxD = self.project_out(o_BxLxNxH)
        return y_BxLxD if cache is None else (y_BxLxD, state)

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

    def project_out(self, o_BxLxNxH) -> jax.Array:
        """y [B, L, D] = o W_out with heads and head dims contracted as one axis. (Written as
        "blnh,nhd->bld", XLA on CPU transposed the [N, H, D] weight rather than the one-token
        activation, a weight copy at every step of a decode loop.)"""
        B, L, N, H = o_BxLxNxH.shape
        cdt = self.compute_dtype
        w_FxD = self.out[...].astype(cdt).reshape(N * H, -1)
        return precision.einsum("blf,fd->bld", o_BxLxNxH.reshape(B, L, N * H), w_FxD, cdt)

    def _cross(self, q_BxLxNxH, inputs: LayerInputs, cache: LayerCache | None):
        """Cross-attention to the encoder states; decoding projects them once (prefill) into CrossKV."""
        if cache is None:
            k, v = self.project_keys_values(inputs.context, inputs.context_positions)
            return self._kernel(q_BxLxNxH, k, v, inputs.positions, None, inputs.context_mask, None, MaskKind.DYNAMIC,
                                0), None
        if cache.plan.fresh:
            k, v = self.project_keys_values(inputs.context, None)
            state = CrossKV(attention_kernels.keys_transposed(k), v.transpose(0, 2, 1, 3))
        else:
            state = cache.state
        o = attention_kernels.plain_parts(q_BxLxNxH, [(state.k, state.v)], mask=inputs.context_mask)
        return o, state

    def _kernel(self, q, k, v, q_positions, k_positions, mask, bias, mask_kind, window):
        request = attention_kernels.Request(
            mask=mask_kind, window=window, has_bias=bias is not None, shaw=self.shaw is not None,
            sixteen_bit=jnp.dtype(self.compute_dtype) != jnp.dtype(jnp.float32),
        )
        kernel = attention_kernels.choose_kernel(self.impl, request)
        if kernel == "splash":
            return attention_kernels.splash(q, k, v, mask_kind=mask_kind, window=window)
        return attention_kernels.KERNELS[kernel](q, k, v, mask=mask, bias=bias, shaw=self.shaw,
                                                 q_positions=q_positions, k_positions=k_positions)


def _softmax_attention(attn: Attention, q, k, v, inputs: LayerInputs, cache: LayerCache | None):
    """softmax(q k^T / sqrt(H) + bias) v. Without a cache: the configured kernel over the call's own
    keys. With one: the plain kernel over the cache's layouts, then (or first, `write_first`) the new
    keys written at their slots."""
    if cache is None:
        mask, mask_kind = inputs.mask, inputs.mask_kind
        if mask is None:
            mask, mask_kind = training_mask(inputs)
        o = attn._kernel(q, k, v, inputs.positions, inputs.positions, mask, inputs.bias, mask_kind or MaskKind.DYNAMIC,
                         inputs.window)
        return o, None
    plan = cache.plan
    written = write_kv(cache.state, k, v, plan.slots_BxT)
    if plan.write_first:  # per-layer buffers: update in place, then read only the cache
        parts = [(written.k, written.v)]
    else:
        new = (attention_kernels.keys_transposed(k), v.transpose(0, 2, 1, 3))
        parts = [new] if plan.fresh else [(cache.state.k, cache.state.v), new]
    o = attention_kernels.plain_parts(q, parts, mask=inputs.mask, bias=inputs.bias, shaw=attn.shaw,
                                      q_positions=inputs.positions, k_positions=plan.k_positions)
    return o, written


def _linear_attention(attn: Attention, q, k, v, inputs: LayerInputs, cache: LayerCache | None):
    """phi(q) (phi(k)^T v) / normaliser (lmx.nn.linear_attention). Causal attention continues its
    running sums (LinearAttentionState) when decoding: O(1) per token in the context length."""
    if cache is None:
        return linear_attention(q, k, v, inputs, attn.feature_map, attn.eps, attn.chunk_size), None
    state = None if cache.plan.fresh else cache.state
    o, S, z = continue_causal_linear(q, k, v, state, inputs.valid, attn.feature_map, attn.eps, attn.chunk_size)
    return o, LinearAttentionState(S, z)


# model.attention.kind -> (attention, q, k, v, inputs, cache) -> (o [B, L, N, H], new cache state or None)
ATTENTION_KINDS = registry.ATTENTION_KINDS.register_all({"softmax": _softmax_attention, "linear": _linear_attention})


def training_mask(inputs: LayerInputs):
    """(mask, kind) of a call that brought no mask: causal (or none) from positions, with segments."""
    mask = mask_lib.causal(inputs.positions, inputs.positions) if inputs.causal else None
    if inputs.segment_ids is not None:
        return mask_lib.combine(mask, segment_mask(inputs.segment_ids)), MaskKind.DYNAMIC
    return mask, inputs.mask_kind or (MaskKind.CAUSAL if inputs.causal else MaskKind.BIDIRECTIONAL)


class LinearAttention(Attention):
    """`Attention(kind="linear", position="none")` with a fixed direction (see lmx.nn.attention).

    q = x Wq [embed, heads, head_dim], k = x Wk, v = x Wv [embed, kv_heads, head_dim],
    o = causal_linear_attention(q, k, v) (or bidirectional when causal=False), y = o Wo.
    No biases, no position encoding. `chunk_size=None` runs the token-by-token scan.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        head_dim: int | None = None,
        *,
        feature_map: str = "elu1",
        causal: bool = True,
        chunk_size: int | None = 64,
        eps: float = 1e-6,
        init_std: float = 0.02,
        out_std: float | None = None,
        param_dtype=jnp.float32,
        compute_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        super().__init__(d_model, n_heads, n_kv_heads, head_dim, position="none", kind="linear",
                         feature_map=feature_map, init_std=init_std, out_std=out_std, param_dtype=param_dtype,
                         compute_dtype=compute_dtype, rngs=rngs)
        self.causal, self.chunk_size, self.eps = causal, chunk_size, eps

    def __call__(self, x_BxLxD: jax.Array, positions_BxL: jax.Array | None = None,
                 segment_ids_BxL: jax.Array | None = None) -> jax.Array:
        return super().__call__(x_BxLxD, positions_BxL, segment_ids_BxL, causal=self.causal)
