"""Independent numpy transcriptions of the formulas lmx.nn implements (float64, no JAX)."""

from __future__ import annotations

import math

import numpy as np


def rmsnorm(x, scale, eps):
    x = np.asarray(x, np.float64)
    return x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + eps) * scale


def layernorm(x, scale, bias, eps):
    x = np.asarray(x, np.float64)
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * scale + bias


_erf = np.vectorize(math.erf)


def gelu_exact(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def silu(x):
    return x / (1.0 + np.exp(-x))


def relu(x):
    return np.maximum(x, 0.0)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def gelu_tanh(x):
    """Hendrycks & Gimpel's tanh approximation."""
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


# name -> (activation, gated)
FFN = {
    "swiglu": (silu, True),
    "geglu": (gelu_exact, True),
    "reglu": (relu, True),
    "glu": (sigmoid, True),
    "gelu": (gelu_exact, False),
    "gelu_tanh": (gelu_tanh, False),
    "relu": (relu, False),
    "silu": (silu, False),
}


def ffn(x, name, up, down, gate=None):
    act, gated = FFN[name]
    h = act(x @ gate) * (x @ up) if gated else act(x @ up)
    return h @ down


def rope(x, positions, base=10000.0):
    """x: (B, L, H, K); positions: (B, L). Pair i = (x[..., i], x[..., i + K/2]) rotated by p * base^(-2i/K)."""
    x = np.asarray(x, np.float64)
    K = x.shape[-1]
    out = np.empty_like(x)
    for i in range(K // 2):
        ang = positions[:, :, None] * base ** (-2.0 * i / K)
        a, b = x[..., i], x[..., i + K // 2]
        out[..., i] = a * np.cos(ang) - b * np.sin(ang)
        out[..., i + K // 2] = b * np.cos(ang) + a * np.sin(ang)
    return out


def softmax(s, axis=-1):
    s = s - s.max(axis=axis, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=axis, keepdims=True)


def mha(x, wq, wk, wv, wo, positions=None, segment_ids=None, use_rope=True, base=10000.0):
    """Plain causal multi-head attention; wq, wk, wv: (D, N, K) with the same N; wo: (N, K, D)."""
    x = np.asarray(x, np.float64)
    B, L, _ = x.shape
    q = np.einsum("bld,dnk->blnk", x, wq)
    k = np.einsum("bld,dnk->blnk", x, wk)
    v = np.einsum("bld,dnk->blnk", x, wv)
    if use_rope:
        q, k = rope(q, positions, base), rope(k, positions, base)
    s = np.einsum("bink,bjnk->bnij", q, k) / np.sqrt(q.shape[-1])
    allowed = np.tril(np.ones((L, L), bool))[None, None]
    if segment_ids is not None:
        allowed = allowed & (segment_ids[:, None, :, None] == segment_ids[:, None, None, :])
    s = np.where(allowed, s, -np.inf)
    p = softmax(s)
    o = np.einsum("bnij,bjnk->bink", p, v)
    return np.einsum("bink,nkd->bid", o, wo)
