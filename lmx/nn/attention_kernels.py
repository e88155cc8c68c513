"""Attention kernels: the same contract, different implementations.

    o = softmax(q k^T / sqrt(H) + bias, masked where mask is False) v      (GQA: query head n uses kv head
                                                                           n // (N/K)), softmax in float32
plain   einsum + float32 softmax written out here; supports everything, including Shaw value terms.
        16-bit keys and values enter the products as they are (q and the probabilities rounded to
        their dtype), summed in float32.
xla     `jax.nn.dot_product_attention(implementation="xla")`; boolean masks and additive biases.
cudnn   the same call with cuDNN's fused kernel (GPU, float16/bfloat16); masks and biases.
splash  the TPU splash-attention Pallas kernel (`jax.experimental.pallas.ops.tpu.splash_attention`);
        static masks only (causal, sliding window, bidirectional), no bias. Runs on TPU, or in
        Pallas interpret mode elsewhere (slow; used by the tests).
`choose_kernel` resolves `auto` and checks that an explicitly requested kernel supports the request;
`auto` falls back to xla with a one-time message when the preferred kernel cannot serve it.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math

import jax
import jax.numpy as jnp
import numpy as np

from lmx import registry
from lmx.errors import ConfigError

log = logging.getLogger("lmx.attention")


@dataclasses.dataclass(frozen=True)
class Request:
    """What one attention call needs from a kernel (all static)."""

    mask: str  # causal | sliding_window | bidirectional | dynamic (per-example masks) | none
    window: int = 0
    has_bias: bool = False
    shaw: bool = False
    sixteen_bit: bool = False


def _gqa_scores(q_BxLxNxH, k_BxSxKxH):
    B, L, N, H = q_BxLxNxH.shape
    K = k_BxSxKxH.shape[2]
    q = q_BxLxNxH.reshape(B, L, K, N // K, H).astype(jnp.float32)
    scores = jnp.einsum("blkgh,bskh->bkgls", q, k_BxSxKxH.astype(jnp.float32))
    return scores.reshape(B, N, L, k_BxSxKxH.shape[1]) / math.sqrt(H)


def _accumulate32(spec, x, cached, /):
    """einsum of float32 `x` with keys or values `cached`, summed in float32. A 16-bit cache stays
    16-bit (x is rounded to its dtype, as fused attention kernels round q and the probabilities):
    widening it would convert the whole cache at every decoding step."""
    return jnp.einsum(spec, x.astype(cached.dtype), cached, preferred_element_type=jnp.float32)


def plain(q_BxLxNxH, k_BxSxKxH, v_BxSxKxH, *, mask=None, bias=None, shaw=None, q_positions=None,
          k_positions=None):
    """Reference kernel. `shaw` (a ShawRelative) adds its key logits and value terms."""
    parts = [(keys_transposed(k_BxSxKxH), v_BxSxKxH.transpose(0, 2, 1, 3))]
    return plain_parts(q_BxLxNxH, parts, mask=mask, bias=bias, shaw=shaw, q_positions=q_positions,
                       k_positions=k_positions)


def keys_transposed(k_BxSxKxH):
    """Keys [B, S, K, H] in a KV cache's key layout [B, K, H, S]."""
    return k_BxSxKxH.transpose(0, 2, 3, 1)


def plain_parts(q_BxLxNxH, parts, *, mask=None, bias=None, shaw=None, q_positions=None, k_positions=None):
    """`plain` over keys and values in a KV cache's layouts, keys [B, K, H, S] and values [B, K, S, H],
    given as parts [(k, v), ...] that follow each other on the key axis (the cache, then the new
    tokens) without building their concatenation. `mask`, `bias` and `k_positions` cover all parts.
    (Both products are then plain matrix products, q [GL, H] @ k [H, S] and p [GL, S] @ v [S, H]: with
    keys stored [S, H], XLA's CPU kernels repacked the whole key cache at every decoding step.)"""
    B, L, N, H = q_BxLxNxH.shape
    K = parts[0][0].shape[1]
    q_BxKxGLxH = q_BxLxNxH.reshape(B, L, K, N // K, H).transpose(0, 2, 3, 1, 4).reshape(B, K, -1, H)
    q_BxKxGLxH = q_BxKxGLxH.astype(jnp.float32) / math.sqrt(H)
    scores = [_accumulate32("bkqh,bkhs->bkqs", q_BxKxGLxH, k) for k, _ in parts]
    scores_BxNxLxS = jnp.concatenate(scores, axis=-1).reshape(B, N, L, -1)
    if shaw is not None:
        scores_BxNxLxS = scores_BxNxLxS + shaw.key_logits(q_BxLxNxH, q_positions, k_positions) / math.sqrt(H)
    if bias is not None:
        scores_BxNxLxS = scores_BxNxLxS + bias.astype(jnp.float32)
    if mask is not None:
        scores_BxNxLxS = jnp.where(mask, scores_BxNxLxS, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores_BxNxLxS, axis=-1)
    if mask is not None:  # a fully masked row gives zeros, not a uniform average
        probs = jnp.where(mask, probs, 0.0)
    probs_BxKxGLxS = probs.reshape(B, K, -1, probs.shape[-1])
    out, start = 0.0, 0
    for _, v in parts:
        S = v.shape[2]
        out = out + _accumulate32("bkqs,bksh->bkqh", probs_BxKxGLxS[..., start : start + S], v)
        start += S
    out_BxLxNxH = out.reshape(B, K, N // K, L, H).transpose(0, 3, 1, 2, 4).reshape(B, L, N, H)
    if shaw is not None:
        out_BxLxNxH = out_BxLxNxH + shaw.value_term(probs, q_positions, k_positions)
    return out_BxLxNxH.astype(q_BxLxNxH.dtype)


def _dot_product(implementation: str):
    def kernel(q, k, v, *, mask=None, bias=None, **_):
        if bias is not None:
            bias = bias.astype(q.dtype)
        return jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, implementation=implementation)

    return kernel


@functools.lru_cache(maxsize=32)
def _splash_kernel(mask_kind: str, window: int, n_heads: int, q_len: int, k_len: int, interpret: bool):
    # TPU-only Pallas kernel (~0.4 s to import): loaded only when a splash kernel is built
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks

    def one_head():
        if mask_kind == "causal":
            return masks.CausalMask((q_len, k_len))
        if mask_kind == "sliding_window":
            return masks.LocalMask((q_len, k_len), window_size=(window - 1, 0), offset=0)
        return masks.FullMask((q_len, k_len))

    multi = masks.MultiHeadMask([one_head() for _ in range(n_heads)])
    return splash.make_splash_mha(multi, head_shards=1, q_seq_shards=1, interpret=interpret)


def splash(q_BxLxNxH, k_BxSxKxH, v_BxSxKxH, *, mask_kind: str, window: int = 0, interpret: bool | None = None,
           **_):
    """Splash attention per example; kv heads are repeated for GQA; q is pre-scaled by 1/sqrt(H)."""
    B, L, N, H = q_BxLxNxH.shape
    S, K = k_BxSxKxH.shape[1], k_BxSxKxH.shape[2]
    if interpret is None:
        interpret = jax.default_backend() != "tpu"
    kernel = _splash_kernel(mask_kind, window, N, L, S, interpret)
    q = (q_BxLxNxH.astype(jnp.float32) / math.sqrt(H)).astype(q_BxLxNxH.dtype).transpose(0, 2, 1, 3)
    k = jnp.repeat(k_BxSxKxH, N // K, axis=2).transpose(0, 2, 1, 3)
    v = jnp.repeat(v_BxSxKxH, N // K, axis=2).transpose(0, 2, 1, 3)
    out_BxNxLxH = jax.vmap(kernel)(q, k, v)
    return out_BxNxLxH.transpose(0, 2, 1, 3).astype(q_BxLxNxH.dtype)


KERNELS = {"plain": plain, "xla": _dot_product("xla"), "cudnn": _dot_product("cudnn"), "splash": splash}


def unsupported(kernel: str, request: Request, backend: str) -> str | None:
    """Why `kernel` cannot serve `request` on `backend` (None if it can)."""
    if request.shaw and kernel != "plain":
        return "Shaw relative positions add value terms, which only the plain kernel computes"
    if kernel == "cudnn":
        if backend not in ("gpu", "cuda", "rocm"):
            return f"cuDNN attention needs a GPU (backend is {backend})"
        if not request.sixteen_bit:
            return "cuDNN fused attention needs float16/bfloat16 compute (model.compute_dtype)"
    if kernel == "splash":
        if request.has_bias:
            return "splash attention cannot add a logit bias (ALiBi, T5)"
        if request.mask not in ("causal", "sliding_window", "bidirectional"):
            return f"splash attention supports static causal/sliding-window/full masks, not a {request.mask} mask"
    return None


_warned: set = set()


def choose_kernel(impl: str, request: Request, backend: str | None = None, allow_interpret: bool = False) -> str:
    """Resolve `auto` and validate explicit choices; raises ConfigError naming the setting."""
    backend = backend or jax.default_backend()
    if impl == "auto":
        preferred = {"tpu": "splash", "gpu": "cudnn", "cuda": "cudnn", "rocm": "cudnn"}.get(backend, "xla")
        if request.shaw:
            return "plain"
        reason = unsupported(preferred, request, backend)
        if reason is None:
            return preferred
        if (preferred, reason) not in _warned:
            _warned.add((preferred, reason))
            log.warning("attention.kernel=auto: %s; using xla", reason)
        return "xla"
    if impl == "splash" and backend != "tpu" and not allow_interpret:
        raise ConfigError(f"model.attention.kernel: splash needs a TPU (backend is {backend}); use auto or xla")
    reason = unsupported(impl, request, "tpu" if impl == "splash" and allow_interpret else backend)
    if reason:
        raise ConfigError(f"model.attention.kernel: {impl} cannot run this attention: {reason}")
    return impl


def dense_mask(mask_BxHxLxS) -> np.ndarray:
    return np.asarray(mask_BxHxLxS)


# model.attention.kernel -> the kernel function; "auto" resolves per backend and request (choose_kernel)
ATTENTION_KERNELS = registry.ATTENTION_KERNELS.register_all({**KERNELS, "auto": choose_kernel})
