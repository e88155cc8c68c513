"""Build the device mesh from `mesh.shape`; every mesh has the axes data, fsdp, tensor, expert."""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from lmx.config import MESH_AXES, MeshConfig
from lmx.errors import ConfigError


def resolve_mesh_shape(shape: dict[str, int], n_devices: int) -> dict[str, int]:
    """Fill the one -1 axis with the remaining devices; check the product equals the device count."""
    sizes = {axis: int(shape.get(axis, 1)) for axis in MESH_AXES}
    known = math.prod(s for s in sizes.values() if s != -1)
    for axis, size in sizes.items():
        if size == -1:
            if n_devices % known:
                raise ConfigError(
                    f"mesh.shape: {n_devices} devices cannot be split with the fixed axes {shape} (product {known})"
                )
            sizes[axis] = n_devices // known
    total = math.prod(sizes.values())
    if total != n_devices:
        raise ConfigError(f"mesh.shape: {shape} uses {total} devices but {n_devices} are available")
    return sizes


def make_mesh(config: MeshConfig, devices=None) -> Mesh:
    """Topology-aware mesh (jax.make_mesh) over all devices, or a plain one over `devices`."""
    devices = list(jax.devices()) if devices is None else list(devices)
    sizes = resolve_mesh_shape(config.shape, len(devices))
    axis_shape = tuple(sizes[a] for a in MESH_AXES)
    auto = (AxisType.Auto,) * len(MESH_AXES)  # shardings given at jit boundaries, propagated by XLA
    if len(devices) == jax.device_count():
        return jax.make_mesh(axis_shape, MESH_AXES, axis_types=auto, devices=devices)
    return Mesh(np.asarray(devices).reshape(axis_shape), MESH_AXES, axis_types=auto)
