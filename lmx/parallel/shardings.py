"""NamedShardings for pytrees whose nnx.Variables carry logical axis names.

A Variable's `out_sharding` metadata (its logical names) is mapped through the strategy's rules
table; every other leaf (optimizer counters, step, RNG) is replicated. The result has the tree's
structure, so the shardings of a train state are a train state of NamedShardings.
"""

from __future__ import annotations

import dataclasses
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


# logical name -> the config field that sets that dimension (for error messages)
_FIELDS = {
    "vocab": "model.vocab_size",
    "embed": "model.d_model",
    "heads": "model.n_heads",
    "kv_heads": "model.n_kv_heads",
    "head_dim": "model.head_dim",
    "mlp": "model.d_ff",
    "layers": "model.n_layers",
}


def param_path(path) -> str:
    """Dotted parameter name from a pytree path (`blocks.mixer.key`), dropping container prefixes."""
    keys = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
    return ".".join(keys)


def _check_divisible(path, shape, spec: PartitionSpec, mesh, names) -> None:
    for dim, (size, axes) in enumerate(zip(shape, spec)):
        if axes is None:
            continue
        axes = (axes,) if isinstance(axes, str) else axes
        parts = math.prod(mesh.shape[a] for a in axes)
        if size % parts:
            name = names[dim]
            field = f", {_FIELDS[name]}" if name in _FIELDS else ""
            sizes = " x ".join(f"{a}={mesh.shape[a]}" for a in axes)
            raise ConfigError(
                f"mesh.shape: parameter {param_path(path)} dimension {dim} ({name}{field}) has size {size}, "
                f"not divisible by mesh axis {sizes}"
                + (f" (product {parts})" if len(axes) > 1 else "")
            )


def tree_shardings(tree, mesh: Mesh, rules: Rules):
    """A pytree of NamedShardings with the same structure as `tree` (Variables kept as wrappers).

    Raises ConfigError (before anything is compiled) when a mesh axis does not divide the dimension
    it shards; a train state's `params` (a field of a dataclass such as lmx.train.state.TrainState,
    or a key of a dict) are checked first so the message names the parameter.
    """
    if dataclasses.is_dataclass(tree) and hasattr(tree, "params"):
        tree_shardings(tree.params, mesh, rules)
    elif isinstance(tree, dict) and "params" in tree and len(tree) > 1:
        tree_shardings(tree["params"], mesh, rules)

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
