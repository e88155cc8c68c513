"""Sharding constraints on activations at block boundaries, by logical name (batch, seq, embed).

The model calls `constrain(x, ("batch", "seq", "embed"))` (lmx.nn.sharding); it is a no-op unless an
`activation_sharding(mesh, rules)` context is active while the step is traced. `with_activation_sharding`
wraps a step function so that the context is active whenever jit traces it:

    step = jax.jit(with_activation_sharding(make_train_step(...), mesh, rules), ...)

A mesh axis that does not divide the dimension it would shard is left out of the constraint
(XLA then chooses), so constraints never turn a valid config into an error.
"""

from __future__ import annotations

import functools
import math

import jax
from jax.sharding import NamedSharding, PartitionSpec

from lmx.nn.sharding import Names, activation_constraint, constrain
from lmx.parallel.rules import Rules, logical_to_spec

__all__ = ["activation_sharding", "constrain", "with_activation_sharding"]


def activation_sharding(mesh, rules: Rules):
    """A context in which `constrain(x, names)` constrains `x` to `names` under `rules` on `mesh`."""
    return activation_constraint(functools.partial(_constrain_on_mesh, mesh=mesh, rules=rules))


def with_activation_sharding(fn, mesh, rules: Rules):
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with activation_sharding(mesh, rules):
            return fn(*args, **kwargs)

    return wrapped


def _constrain_on_mesh(x: jax.Array, names: Names, *, mesh, rules: Rules) -> jax.Array:
    """`x` with a sharding constraint from the logical `names` under `rules`."""
    spec = []
    for size, axes in zip(x.shape, logical_to_spec(names, rules)):
        axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
        kept = []
        for axis in axes:  # keep the longest prefix of axes that divides the dimension
            if size % (math.prod(mesh.shape[a] for a in kept) * mesh.shape[axis]):
                break
            kept.append(axis)
        spec.append(kept[0] if len(kept) == 1 else (tuple(kept) or None))
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, PartitionSpec(*spec)))
