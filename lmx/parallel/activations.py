"""Sharding constraints on activations at block boundaries, by logical name (batch, seq, embed).

The model calls `constrain(x, ("batch", "seq", "embed"))`; it is a no-op unless an
`activation_sharding(mesh, rules)` context is active while the step is traced. `with_activation_sharding`
wraps a step function so that the context is active whenever jit traces it:

    step = jax.jit(with_activation_sharding(make_train_step(...), mesh, rules), ...)

A mesh axis that does not divide the dimension it would shard is left out of the constraint
(XLA then chooses), so constraints never turn a valid config into an error.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math

import jax
from jax.sharding import NamedSharding, PartitionSpec

from lmx.parallel.rules import Rules, logical_to_spec

_CONTEXT: contextvars.ContextVar = contextvars.ContextVar("lmx_activation_sharding", default=None)


@contextlib.contextmanager
def activation_sharding(mesh, rules: Rules):
    token = _CONTEXT.set((mesh, rules))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def with_activation_sharding(fn, mesh, rules: Rules):
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with activation_sharding(mesh, rules):
            return fn(*args, **kwargs)

    return wrapped


def constrain(x: jax.Array, names: tuple[str | None, ...]) -> jax.Array:
    """`x` with a sharding constraint from the logical `names` under the active rules (else `x`)."""
    context = _CONTEXT.get()
    if context is None:
        return x
    mesh, rules = context
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
