"""Parameter creation with logical sharding names, and dtype lookup.

Every lmx parameter is `nnx.Param(value, sharding_names=names, eager_sharding=False)`: the names
are logical axis names (`vocab`, `embed`, `heads`, `kv_heads`, `head_dim`, `mlp`, `layers`) that
`lmx.parallel.rules` maps to mesh axes. `eager_sharding=False` keeps creation mesh-free; the trainer
shards at the jit boundary. Flax >= 0.12 stores the names under the metadata key `out_sharding`
(`sharding_names` is its deprecated alias); `logical_names` reads whichever is present.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from lmx import registry

# model.param_dtype / model.compute_dtype names -> dtypes
DTYPES = registry.DTYPES.register_all({"float32": jnp.float32, "bfloat16": jnp.bfloat16})

_NAME_KEYS = ("out_sharding", "sharding_names", "sharding")


def dtype_of(name_or_dtype) -> jnp.dtype:
    """`"bfloat16"` -> jnp.bfloat16; dtypes pass through."""
    if isinstance(name_or_dtype, str):
        return DTYPES[name_or_dtype]
    return name_or_dtype


def param(value: jax.Array, names: Sequence[str]) -> nnx.Param:
    """`nnx.Param` carrying the logical axis `names` (one per dimension of `value`)."""
    names = tuple(names)
    if len(names) != value.ndim:
        raise ValueError(f"{len(names)} logical names {names} for a parameter of shape {value.shape}")
    with warnings.catch_warnings():  # flax 0.12 renamed sharding_names -> out_sharding
        warnings.simplefilter("ignore", DeprecationWarning)
        return nnx.Param(value, sharding_names=names, eager_sharding=False)


def normal_param(rngs: nnx.Rngs, shape: Sequence[int], names: Sequence[str], std: float, dtype) -> nnx.Param:
    """Parameter drawn from N(0, std^2) in float32, stored in `dtype`."""
    value = std * jax.random.normal(rngs.params(), tuple(shape), jnp.float32)
    return param(value.astype(dtype_of(dtype)), names)


def constant_param(value: float, shape: Sequence[int], names: Sequence[str], dtype) -> nnx.Param:
    """Parameter filled with `value` (norm scales: 1, biases: 0)."""
    return param(jnp.full(tuple(shape), value, dtype_of(dtype)), names)


def logical_names(variable: nnx.Variable) -> tuple[str | None, ...]:
    """The logical axis names stored on `variable` ((None,) * ndim when it has none)."""
    metadata = variable.get_metadata()
    for key in _NAME_KEYS:
        names = metadata.get(key)
        if names is not None:
            return tuple(names)
    return (None,) * jnp.ndim(variable.get_value())
