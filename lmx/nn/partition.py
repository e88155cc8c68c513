"""Logical partition specs read from parameter metadata."""

from __future__ import annotations

from typing import Any

from flax import nnx

from lmx.nn.params import logical_names


def logical_partition_specs(model_or_state: nnx.Module | nnx.State) -> dict[str, Any]:
    """Nested dict, shaped like `nnx.state(model).to_pure_dict()`, of logical-name tuples.

    Each leaf is the tuple of logical axis names of one variable (e.g. ("layers", "embed", "heads",
    "head_dim")); map it to mesh axes with `lmx.parallel.logical_to_spec` using
    `jax.tree.map(f, specs, is_leaf=lambda x: isinstance(x, tuple))`.
    """
    state = nnx.state(model_or_state) if isinstance(model_or_state, nnx.Module) else model_or_state
    return _unflatten({path: logical_names(var) for path, var in nnx.to_flat_state(state)})


def _unflatten(flat: dict[tuple, Any]) -> dict[str, Any]:
    tree: dict = {}
    for path, leaf in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = leaf
    return tree
