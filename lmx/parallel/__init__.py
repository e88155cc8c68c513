"""Device meshes, logical-axis sharding rules and multi-host initialisation."""

from lmx.parallel.mesh import make_mesh
from lmx.parallel.rules import STRATEGIES, logical_to_spec

__all__ = ["STRATEGIES", "logical_to_spec", "make_mesh"]
