"""`lmx info --sharding`: how a config's train state is laid out over its mesh, without the devices.

The caller passes the model and optimizer state built abstractly (`jax.eval_shape`; lmx.train.state
.sharding_report builds them from a config), the mesh is a `jax.sharding.AbstractMesh` sized from
`mesh.shape` (a `-1` axis takes the remaining devices of `n_devices`, by default this machine's device
count), and each parameter's per-device bytes follow from its PartitionSpec. So a 256-chip layout can
be checked on a laptop before a run is launched.
"""

from __future__ import annotations

import math

import jax
from flax import nnx
from jax.sharding import AbstractMesh, AxisType

from lmx.config import MESH_AXES, Config
from lmx.errors import ConfigError
from lmx.nn.attention import resolve_attention_impl
from lmx.parallel.mesh import resolve_mesh_shape
from lmx.parallel.rules import STRATEGIES, logical_to_spec
from lmx.parallel.shardings import _check_divisible, logical_names, param_path


def abstract_mesh(config: Config, n_devices: int | None = None) -> AbstractMesh:
    n = jax.device_count() if n_devices is None else n_devices
    if n_devices is None and -1 not in config.mesh.shape.values():
        n = math.prod(config.mesh.shape.values())
    sizes = resolve_mesh_shape(config.mesh.shape, n)
    return AbstractMesh(tuple(sizes[a] for a in MESH_AXES), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def _shard_shape(shape, spec, mesh) -> tuple[int, ...]:
    out = []
    for size, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
        out.append(-(-size // math.prod(mesh.shape[a] for a in axes)))
    return tuple(out)


def _leaves(tree):
    is_var = lambda x: isinstance(x, nnx.Variable)
    return jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_var)[0]


def layout_report(config: Config, params, opt_state, n_devices: int | None = None) -> dict:
    """Per-parameter shape, logical axes, spec and bytes per device; totals per device and overall.

    `params` and `opt_state` are abstract (ShapeDtypeStruct leaves, nnx Variables kept so their
    logical axis names are readable), as `jax.eval_shape` of the train state's init gives them.
    """
    mesh = abstract_mesh(config, n_devices)
    rules = STRATEGIES[config.mesh.strategy]
    rows, totals = [], {"params": 0, "opt_state": 0}
    global_totals = {"params": 0, "opt_state": 0}
    for part, tree in (("params", params), ("opt_state", opt_state)):
        for path, leaf in _leaves(tree):
            if isinstance(leaf, nnx.Variable):
                names = logical_names(leaf)
                value = leaf.get_value()
            else:
                names, value = None, leaf
            spec = logical_to_spec(names, rules)
            if names is not None:
                _check_divisible(path, value.shape, spec, mesh, names)
            itemsize = value.dtype.itemsize
            per_device = math.prod(_shard_shape(value.shape, spec, mesh)) * itemsize
            totals[part] += per_device
            global_totals[part] += math.prod(value.shape) * itemsize
            if part == "params":
                rows.append({
                    "name": param_path(path),
                    "shape": list(value.shape),
                    "dtype": str(value.dtype),
                    "logical_axes": list(names) if names else [],
                    "spec": str(spec),
                    "bytes_per_device": per_device,
                })
    backend = jax.default_backend()
    return {
        "config": config.name,
        "strategy": config.mesh.strategy,
        "mesh": dict(mesh.shape),
        "devices": math.prod(mesh.shape.values()),
        "parameters": rows,
        "bytes_per_device": {**totals, "total": totals["params"] + totals["opt_state"]},
        "bytes_global": {**global_totals, "total": global_totals["params"] + global_totals["opt_state"]},
        "attention_impl": {
            "config": config.model.attention.kernel,
            "backend": backend,
            "runs": resolve_attention_impl(config.model.attention.kernel, config.model.compute_dtype, backend),
        },
    }


def attention_kernel(config: Config, backend: str | None = None) -> str:
    """"xla (model.attention.kernel=auto on cpu)": the attention kernel this config runs on `backend`."""
    backend = backend or jax.default_backend()
    impl = config.model.attention.kernel
    try:
        runs = resolve_attention_impl(impl, config.model.compute_dtype, backend)
    except ConfigError as exc:
        runs = f"unavailable ({exc})"
    return f"{runs} (model.attention.kernel={impl} on {backend})"


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return str(n)


def format_report(report: dict) -> str:
    mesh = " x ".join(f"{a}={s}" for a, s in report["mesh"].items())
    lines = [f"sharding of {report['config']}: strategy {report['strategy']}, mesh {mesh} "
             f"({report['devices']} devices; abstract mesh, no devices needed)"]
    header = ("parameter", "shape", "logical axes", "spec", "bytes/device")
    table = [header] + [
        (r["name"], "x".join(map(str, r["shape"])), ",".join(r["logical_axes"]) or "-", r["spec"],
         _bytes(r["bytes_per_device"]))
        for r in report["parameters"]
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    per, glob = report["bytes_per_device"], report["bytes_global"]
    lines.append(f"per device: params {_bytes(per['params'])}, optimizer state {_bytes(per['opt_state'])}, "
                 f"total {_bytes(per['total'])} (unsharded total {_bytes(glob['total'])})")
    att = report["attention_impl"]
    lines.append(f"attention: model.attention.kernel={att['config']} runs {att['runs']} on backend {att['backend']}")
    return "\n".join(lines)
