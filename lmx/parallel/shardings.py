"""NamedShardings for pytrees whose nnx.Variables carry logical axis names.

A Variable's `out_sharding` metadata (its logical names) is mapped through the strategy's rules
table; every other leaf (optimizer counters, step, RNG) is replicated.
"""

from __future__ import annotations

import math

import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lmx.errors import ConfigError
from lmx.parallel.rules import Rules, logical_to_spec


def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


def logical_names(variable: nnx.Variable):
    return variable.get_metadata().get("out_sharding")


def _check_divisible(path, shape, spec: PartitionSpec, mesh: Mesh, names) -> None:
    for dim, (size, axes) in enumerate(zip(shape, spec)):
        if axes is None:
            continue
        axes = (axes,) if isinstance(axes, str) else axes
        parts = math.prod(mesh.shape[a] for a in axes)
        if size % parts:
            raise ConfigError(
                f"mesh.shape: parameter {jax.tree_util.keystr(path)} dimension {dim} "
                f"({names[dim]}={size}) is not divisible by mesh axes {'x'.join(axes)} of size {parts}"
            )


def tree_shardings(tree, mesh: Mesh, rules: Rules):
    """A pytree of NamedShardings with the same structure as `tree` (Variables kept as wrappers)."""

    def one(path, leaf):
        if _is_variable(leaf):
            names = logical_names(leaf)
            spec = logical_to_spec(names, rules)
            _check_divisible(path, leaf.value.shape, spec, mesh, names)
            return leaf.replace(NamedSharding(mesh, spec))
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree_util.tree_map_with_path(one, tree, is_leaf=_is_variable)


def batch_sharding(mesh: Mesh, rules: Rules) -> NamedSharding:
    """Sharding of a [batch, ...] array: the batch dimension split over the data-parallel axes."""
    return NamedSharding(mesh, logical_to_spec(("batch",), rules))


def data_parallel_size(mesh: Mesh, rules: Rules) -> int:
    return math.prod(mesh.shape[a] for a in rules.get("batch", ()))
