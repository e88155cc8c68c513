"""The hook through which a model constrains the sharding of its activations, by logical name.

A module calls `constrain(x, ("batch", "seq", "embed"))`; it returns `x` unchanged unless a
constraint is active (`activation_constraint(fn)`), in which case it returns `fn(x, names)`.
The model knows only logical names: meshes and rules tables are lmx.parallel's, which activates
the constraint (`lmx.parallel.activations.activation_sharding(mesh, rules)`) while a step is traced.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator

import jax

Names = tuple[str | None, ...]
Constraint = Callable[[jax.Array, Names], jax.Array]

_CONSTRAINT: contextvars.ContextVar[Constraint | None] = contextvars.ContextVar(
    "lmx_activation_sharding", default=None
)


@contextlib.contextmanager
def activation_constraint(fn: Constraint) -> Iterator[None]:
    """Within the block, `constrain(x, names)` returns `fn(x, names)`."""
    token = _CONSTRAINT.set(fn)
    try:
        yield
    finally:
        _CONSTRAINT.reset(token)


def constrain(x: jax.Array, names: Names) -> jax.Array:
    """`x` with the active activation constraint for the logical `names` applied (else `x` itself)."""
    fn = _CONSTRAINT.get()
    return x if fn is None else fn(x, names)
