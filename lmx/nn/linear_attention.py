"""Kernelised linear attention (Katharopoulos et al. 2020, "Transformers are RNNs", arXiv:2006.16236).

Softmax attention's similarity exp(q.k) is replaced by a feature-map kernel phi(q).phi(k), so the
sum over keys factorises and the cost is linear in the sequence length L. For query i:
    causal:         o_i = phi(q_i)^T S_i / (phi(q_i)^T z_i + eps),
                    S_i = sum_{j<=i} phi(k_j) v_j^T  [H, H],    z_i = sum_{j<=i} phi(k_j)  [H]
    bidirectional:  o_i = phi(q_i)^T (phi(K)^T V) / (phi(q_i)^T phi(K)^T 1 + eps)
Feature maps (registry FEATURE_MAPS): "elu1" phi(x) = elu(x) + 1 (the paper's choice) and
"relu" phi(x) = max(x, 0). Both are non-negative, so the normaliser is >= 0; `eps` guards the
division (relu can zero a whole row).

The causal form is the paper's RNN view: a `jax.lax.scan` over time carries the running state
(S, z), [B, N, H, H] and [B, N, H], so memory is O(L) in the sequence length: no L x L matrix and no
[L, H, H] cumulative tensor. With `chunk_size=C` the scan runs over L/C chunks instead: inside a
chunk the masked C x C quadratic form, across chunks the carried state (never an L x L matrix).
All products accumulate in float32; outputs are cast back to q's dtype.

GQA: k, v may have K heads with N % K == 0 (query head n reads key/value head n // (N / K), as in
lmx.nn.attention). `k_valid_BxL` (bool) drops invalid keys (padding): their phi(k) is zeroed, so
they enter neither S nor z. `segment_ids_BxL` (causal form) keeps packed documents apart: the state
restarts where the segment id changes (segments must be contiguous runs, as packing makes them).

Standalone functions: `o_BxLxNxH = causal_linear_attention(q_BxLxNxH, k_BxLxKxH, v_BxLxKxH)`.
Standalone module (same projections and logical names as `Attention`, no position encoding):
`self.attn = LinearAttention(d_model, n_heads, n_kv_heads, rngs=rngs)`, then
`y_BxLxD = self.attn(x_BxLxD, positions_BxL, segment_ids_BxL)` (positions are accepted for call
compatibility and ignored).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lmx import registry

FEATURE_MAPS = registry.LINEAR_FEATURE_MAPS.register_all({
    "elu1": lambda x: jax.nn.elu(x) + 1.0,
    "relu": jax.nn.relu,
})


def _features(
    q_BxLxNxH: jax.Array,
    k_BxLxKxH: jax.Array,
    v_BxLxKxH: jax.Array,
    feature_map: str,
    k_valid_BxL: jax.Array | None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """float32 phi(q), phi(k), v with k/v heads repeated up to N and invalid keys zeroed."""
    if feature_map not in FEATURE_MAPS:
        raise ValueError(f"unknown feature map {feature_map!r}; choose one of {', '.join(FEATURE_MAPS)}")
    N, K = q_BxLxNxH.shape[2], k_BxLxKxH.shape[2]
    if N % K or v_BxLxKxH.shape[2] != K:
        raise ValueError(f"k/v heads ({K}, {v_BxLxKxH.shape[2]}) must be equal and divide q heads ({N})")
    phi = FEATURE_MAPS[feature_map]
    fq_BxLxNxH = phi(q_BxLxNxH.astype(jnp.float32))
    fk_BxLxKxH = phi(k_BxLxKxH.astype(jnp.float32))
    v_BxLxKxH = v_BxLxKxH.astype(jnp.float32)
    if k_valid_BxL is not None:
        fk_BxLxKxH = fk_BxLxKxH * k_valid_BxL[:, :, None, None].astype(jnp.float32)
    if K != N:  # head n uses kv head n // (N / K)
        fk_BxLxKxH = jnp.repeat(fk_BxLxKxH, N // K, axis=2)
        v_BxLxKxH = jnp.repeat(v_BxLxKxH, N // K, axis=2)
    return fq_BxLxNxH, fk_BxLxKxH, v_BxLxKxH


def bidirectional_linear_attention(
    q_BxLxNxH: jax.Array,
    k_BxLxKxH: jax.Array,
    v_BxLxKxH: jax.Array,
    feature_map: str = "elu1",
    eps: float = 1e-6,
    k_valid_BxL: jax.Array | None = None,
) -> jax.Array:
    """Non-causal linear attention, phi(Q)(phi(K)^T V) / (phi(Q) phi(K)^T 1 + eps), per head."""
    fq, fk, v = _features(q_BxLxNxH, k_BxLxKxH, v_BxLxKxH, feature_map, k_valid_BxL)
    kv_BxNxHxH = jnp.einsum("blnh,blnm->bnhm", fk, v)
    z_BxNxH = jnp.sum(fk, axis=1)
    num_BxLxNxH = jnp.einsum("blnh,bnhm->blnm", fq, kv_BxNxHxH)
    den_BxLxN = jnp.einsum("blnh,bnh->bln", fq, z_BxNxH)
    return (num_BxLxNxH / (den_BxLxN[..., None] + eps)).astype(q_BxLxNxH.dtype)


def causal_linear_attention(
    q_BxLxNxH: jax.Array,
    k_BxLxKxH: jax.Array,
    v_BxLxKxH: jax.Array,
    feature_map: str = "elu1",
    eps: float = 1e-6,
    k_valid_BxL: jax.Array | None = None,
    segment_ids_BxL: jax.Array | None = None,
    chunk_size: int | None = None,
) -> jax.Array:
    """Causal linear attention via a scan carrying S = sum phi(k) v^T and z = sum phi(k).

    `chunk_size=None` scans token by token (the RNN form); `chunk_size=C` scans chunks of C tokens
    (L is zero-padded up to a multiple of C; padded keys contribute nothing).
    """
    fq, fk, v = _features(q_BxLxNxH, k_BxLxKxH, v_BxLxKxH, feature_map, k_valid_BxL)
    B, L, N, H = fq.shape
    if segment_ids_BxL is None:
        segment_ids_BxL = jnp.zeros((B, L), jnp.int32)
    seg_BxL = segment_ids_BxL.astype(jnp.int32)
    if chunk_size is None or chunk_size <= 1:
        o = _token_scan(fq, fk, v, seg_BxL, eps)
    else:
        o = _chunk_scan(fq, fk, v, seg_BxL, eps, int(chunk_size))
    return o.astype(q_BxLxNxH.dtype)


def _token_scan(fq_BxLxNxH, fk_BxLxNxH, v_BxLxNxH, seg_BxL, eps):
    B, L, N, H = fq_BxLxNxH.shape
    # a token whose segment differs from its predecessor's starts with an empty state
    prev_BxL = jnp.concatenate([seg_BxL[:, :1], seg_BxL[:, :-1]], axis=1)
    keep_BxL = (seg_BxL == prev_BxL).astype(jnp.float32)

    def step(carry, xs):
        S_BxNxHxH, z_BxNxH = carry
        fq_BxNxH, fk_BxNxH, v_BxNxH, keep_B = xs
        S_BxNxHxH = keep_B[:, None, None, None] * S_BxNxHxH + fk_BxNxH[..., :, None] * v_BxNxH[..., None, :]
        z_BxNxH = keep_B[:, None, None] * z_BxNxH + fk_BxNxH
        num_BxNxH = jnp.einsum("bnh,bnhm->bnm", fq_BxNxH, S_BxNxHxH)
        den_BxN = jnp.einsum("bnh,bnh->bn", fq_BxNxH, z_BxNxH)
        return (S_BxNxHxH, z_BxNxH), num_BxNxH / (den_BxN[..., None] + eps)

    time_major = lambda a: jnp.moveaxis(a, 1, 0)  # noqa: E731
    init = (jnp.zeros((B, N, H, H), jnp.float32), jnp.zeros((B, N, H), jnp.float32))
    xs = (time_major(fq_BxLxNxH), time_major(fk_BxLxNxH), time_major(v_BxLxNxH), time_major(keep_BxL))
    _, o_LxBxNxH = jax.lax.scan(step, init, xs)
    return time_major(o_LxBxNxH)


def _chunk_scan(fq_BxLxNxH, fk_BxLxNxH, v_BxLxNxH, seg_BxL, eps, C):
    B, L, N, H = fq_BxLxNxH.shape
    T = -(-L // C)  # number of chunks
    pad = T * C - L
    if pad:  # padded tokens: phi(k) = 0 adds nothing; their outputs are sliced off
        zeros = ((0, 0), (0, pad), (0, 0), (0, 0))
        fq_BxLxNxH, fk_BxLxNxH, v_BxLxNxH = (jnp.pad(a, zeros) for a in (fq_BxLxNxH, fk_BxLxNxH, v_BxLxNxH))
        seg_BxL = jnp.pad(seg_BxL, ((0, 0), (0, pad)), mode="edge")

    def chunked(a):  # [B, T*C, ...] -> [T, B, C, ...]
        return jnp.moveaxis(a.reshape(B, T, C, *a.shape[2:]), 1, 0)

    # segment id of the last token before each chunk (the state carried into it belongs to it)
    seg_TxBxC = chunked(seg_BxL)
    causal_CxC = jnp.tril(jnp.ones((C, C), bool))

    def step(carry, xs):
        S_BxNxHxH, z_BxNxH, last_B = carry
        fq_BxCxNxH, fk_BxCxNxH, v_BxCxNxH, seg_BxC = xs
        # intra-chunk: masked quadratic form, key j visible to query i iff j <= i and same segment
        same_BxCxC = (seg_BxC[:, :, None] == seg_BxC[:, None, :]) & causal_CxC
        a_BxNxCxC = jnp.einsum("binh,bjnh->bnij", fq_BxCxNxH, fk_BxCxNxH)
        a_BxNxCxC = jnp.where(same_BxCxC[:, None], a_BxNxCxC, 0.0)
        # inter-chunk: the carried state applies to queries still in the carried segment
        from_state_BxC = (seg_BxC == last_B[:, None]).astype(jnp.float32)
        inter_num_BxCxNxH = jnp.einsum("binh,bnhm->binm", fq_BxCxNxH, S_BxNxHxH)
        inter_den_BxCxN = jnp.einsum("binh,bnh->bin", fq_BxCxNxH, z_BxNxH)
        num_BxCxNxH = jnp.einsum("bnij,bjnh->binh", a_BxNxCxC, v_BxCxNxH)
        num_BxCxNxH = num_BxCxNxH + from_state_BxC[:, :, None, None] * inter_num_BxCxNxH
        den_BxCxN = jnp.sum(a_BxNxCxC, axis=-1).transpose(0, 2, 1)
        den_BxCxN = den_BxCxN + from_state_BxC[:, :, None] * inter_den_BxCxN
        o_BxCxNxH = num_BxCxNxH / (den_BxCxN[..., None] + eps)
        # new state: keys of the chunk's last segment, plus the old state if that segment continues
        new_last_B = seg_BxC[:, -1]
        w_BxC = (seg_BxC == new_last_B[:, None]).astype(jnp.float32)
        cont_B = (new_last_B == last_B).astype(jnp.float32) * w_BxC[:, 0]
        wk_BxCxNxH = w_BxC[:, :, None, None] * fk_BxCxNxH
        chunk_S_BxNxHxH = jnp.einsum("bjnh,bjnm->bnhm", wk_BxCxNxH, v_BxCxNxH)
        S_BxNxHxH = cont_B[:, None, None, None] * S_BxNxHxH + chunk_S_BxNxHxH
        z_BxNxH = cont_B[:, None, None] * z_BxNxH + jnp.sum(wk_BxCxNxH, axis=1)
        return (S_BxNxHxH, z_BxNxH, new_last_B), o_BxCxNxH

    init = (
        jnp.zeros((B, N, H, H), jnp.float32),
        jnp.zeros((B, N, H), jnp.float32),
        seg_BxL[:, 0],
    )
    xs = (chunked(fq_BxLxNxH), chunked(fk_BxLxNxH), chunked(v_BxLxNxH), seg_TxBxC)
    _, o_TxBxCxNxH = jax.lax.scan(step, init, xs)
    o_BxLxNxH = jnp.moveaxis(o_TxBxCxNxH, 0, 1).reshape(B, T * C, N, H)
    return o_BxLxNxH[:, :L]


def linear_attention(q_BxLxNxH, k_BxLxKxH, v_BxLxKxH, inputs, feature_map: str, eps: float, chunk_size: int | None):
    """A layer's linear attention over its own tokens (`inputs`: lmx.nn.layer_inputs.LayerInputs):
    causal (the chunked scan; segments restart the state) or bidirectional; `inputs.valid` drops
    padding keys."""
    if inputs.causal:
        chunk = None if chunk_size is None else min(chunk_size, q_BxLxNxH.shape[1])
        return causal_linear_attention(q_BxLxNxH, k_BxLxKxH, v_BxLxKxH, feature_map=feature_map, eps=eps,
                                       k_valid_BxL=inputs.valid, segment_ids_BxL=inputs.segment_ids, chunk_size=chunk)
    if inputs.segment_ids is not None:
        raise ValueError("bidirectional linear attention cannot keep packed documents apart (segment_ids)")
    return bidirectional_linear_attention(q_BxLxNxH, k_BxLxKxH, v_BxLxKxH, feature_map=feature_map, eps=eps,
                                          k_valid_BxL=inputs.valid)


def continue_causal_linear(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, state, valid_BxT, feature_map: str, eps: float,
                           chunk_size: int | None):
    """Causal linear attention of T new tokens continuing a running state (S [B, N, H, H], z [B, N, H];
    None: empty); returns (o [B, T, N, H] float32, S, z). Invalid (padding) tokens add nothing."""
    fq, fk, v = _features(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, feature_map, valid_BxT)
    S_add = jnp.einsum("btnh,btnm->bnhm", fk, v)
    z_add = fk.sum(axis=1)
    if state is None:  # prefill: the chunked causal scan from an empty state
        chunk = None if chunk_size is None else min(chunk_size, q_BxTxNxH.shape[1])
        o = causal_linear_attention(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, feature_map=feature_map, eps=eps,
                                    k_valid_BxL=valid_BxT, chunk_size=chunk).astype(jnp.float32)
        return o, S_add, z_add
    # the state's contribution plus a causal quadratic form over the T new tokens
    T = q_BxTxNxH.shape[1]
    w_BxNxTxT = jnp.einsum("btnh,bsnh->bnts", fq, fk) * jnp.tril(jnp.ones((T, T), jnp.float32))
    num = jnp.einsum("btnh,bnhm->btnm", fq, state.S) + jnp.einsum("bnts,bsnm->btnm", w_BxNxTxT, v)
    den = jnp.einsum("btnh,bnh->btn", fq, state.z) + jnp.einsum("bnts->btn", w_BxNxTxT)
    return num / (den[..., None] + eps), state.S + S_add, state.z + z_add
