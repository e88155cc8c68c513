"""Normalisation layers, computed in float32 and returned in the input dtype.

Use standalone in any NNX model: `self.norm = RMSNorm(dim, eps=1e-5, rngs=rngs)`, then
`y_BxLxD = self.norm(x_BxLxD)`. `NORMS` maps `config.norm.kind` names to the classes; every entry has the
constructor `(dim, eps, *, use_bias=True, param_dtype, rngs)` (RMSNorm has no bias and ignores it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lmx import registry
from lmx.nn.params import constant_param


class RMSNorm(nnx.Module):
    """y = x / sqrt(mean(x^2) + eps) * scale over the last axis (Zhang & Sennrich 2019, arXiv:1910.07467).

    `scale` [embed] starts at 1. Statistics and the product are float32; the output has x's dtype.
    """

    def __init__(self, dim: int, eps: float = 1e-5, *, use_bias: bool = True, param_dtype=jnp.float32,
                 rngs: nnx.Rngs | None = None):
        del rngs, use_bias  # deterministic init; accepted so all norms share one constructor
        self.eps = eps
        self.scale = constant_param(1.0, (dim,), ("embed",), param_dtype)

    def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
        x = x_BxLxD.astype(jnp.float32)
        ms_BxLx1 = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
        y = x * jax.lax.rsqrt(ms_BxLx1 + self.eps) * self.scale[...].astype(jnp.float32)
        return y.astype(x_BxLxD.dtype)


class LayerNorm(nnx.Module):
    """y = (x - mean(x)) / sqrt(var(x) + eps) * scale + bias over the last axis (Ba et al. 2016, arXiv:1607.06450).

    `scale` [embed] starts at 1, `bias` [embed] at 0 (omitted with use_bias=False). Computed in
    float32; output has x's dtype.
    """

    def __init__(self, dim: int, eps: float = 1e-5, *, use_bias: bool = True, param_dtype=jnp.float32,
                 rngs: nnx.Rngs | None = None):
        del rngs
        self.eps = eps
        self.scale = constant_param(1.0, (dim,), ("embed",), param_dtype)
        self.bias = constant_param(0.0, (dim,), ("embed",), param_dtype) if use_bias else None

    def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
        x = x_BxLxD.astype(jnp.float32)
        mean_BxLx1 = jnp.mean(x, axis=-1, keepdims=True)
        var_BxLx1 = jnp.mean(jnp.square(x - mean_BxLx1), axis=-1, keepdims=True)
        y = (x - mean_BxLx1) * jax.lax.rsqrt(var_BxLx1 + self.eps)
        y = y * self.scale[...].astype(jnp.float32)
        if self.bias is not None:
            y = y + self.bias[...].astype(jnp.float32)
        return y.astype(x_BxLxD.dtype)


NORMS = registry.NORMS.register_all({"rmsnorm": RMSNorm, "layernorm": LayerNorm})
