"""Logical axis names -> mesh axes, one table per parallelism strategy.

Every parameter carries logical axis names (`embed`, `heads`, `kv_heads`, `head_dim`, `mlp`,
`vocab`, `expert`, `layers`); activations use `batch` and `seq`. A strategy is a rules table mapping
each logical name to a tuple of mesh axes (empty: replicated). Adding a strategy is one table here.
"""

from __future__ import annotations

from jax.sharding import PartitionSpec

from lmx import registry

Rules = dict[str, tuple[str, ...]]

_DP: Rules = {"batch": ("data",)}
_FSDP: Rules = {"batch": ("data", "fsdp"), "embed": ("fsdp",)}
_TP: Rules = {
    "batch": ("data",),
    "heads": ("tensor",),
    "kv_heads": ("tensor",),
    "mlp": ("tensor",),
    "vocab": ("tensor",),
}
_FSDP_TP: Rules = {**_TP, "batch": ("data", "fsdp"), "embed": ("fsdp",)}

STRATEGIES = registry.STRATEGIES.register_all({
    "dp": _DP,
    "fsdp": _FSDP,
    "tp": _TP,
    "fsdp_tp": _FSDP_TP,
})


def logical_to_spec(names: tuple[str | None, ...] | None, rules: Rules) -> PartitionSpec:
    """PartitionSpec for a tensor whose dimensions carry the logical `names` (None: replicated)."""
    if names is None:
        return PartitionSpec()
    used: set[str] = set()
    spec = []
    for name in names:
        axes = tuple(a for a in rules.get(name, ()) if a not in used) if name else ()
        used.update(axes)
        spec.append(axes[0] if len(axes) == 1 else (axes or None))
    return PartitionSpec(*spec)
