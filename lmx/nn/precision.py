"""Mixed-precision contractions: operands in the compute dtype, products summed in float32.

    y = cast_to_compute_dtype( sum_k x[..., k] w[k, ...] ),   the sum accumulated in float32

With `compute_dtype=float32` this is an ordinary einsum. With bfloat16 the operands (activations and
weights) are read as bfloat16 and the dot product is accumulated in float32 (`preferred_element_type`),
which is what accelerators' matrix units do natively and is more accurate than a bfloat16 sum. It is
also what makes bfloat16 fast on XLA's CPU backend: a dot with bfloat16 operands and a bfloat16 result
is widened to float32 there (weights converted at every call), while bfloat16 x bfloat16 -> float32
runs on the native kernels (`benchmarks/generate_vs_hf.py --dtype bfloat16`, docs/BENCHMARKS.md).

Standalone: `einsum("bld,df->blf", x, w, jnp.bfloat16)` in any JAX code.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def einsum(spec: str, x: jax.Array, w: jax.Array, compute_dtype) -> jax.Array:
    """`jnp.einsum(spec, x, w)` with both operands cast to `compute_dtype`, float32 accumulation, and
    the result returned in `compute_dtype`."""
    product = jnp.einsum(spec, x.astype(compute_dtype), w.astype(compute_dtype), preferred_element_type=jnp.float32)
    return product.astype(compute_dtype)
