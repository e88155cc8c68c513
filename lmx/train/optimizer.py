"""Optimizer construction: global-norm clipping then AdamW with a weight-decay mask.

Weight decay applies to matrices only: a parameter is decayed iff it has at least two dimensions
besides the stacked `layers` axis (norm scales and biases are not decayed). Optimizers are a
registry keyed by `optim.name`.
"""

from __future__ import annotations

import jax
import optax
from flax import nnx

from lmx import registry
from lmx.config import OptimConfig
from lmx.train.schedules import make_schedule


def _logical_rank(variable: nnx.Variable) -> int:
    names = variable.get_metadata().get("out_sharding") or ()
    return variable.value.ndim - (1 if names and names[0] == "layers" else 0)


def decay_mask(params: nnx.State):
    """True for parameters that receive weight decay (matrices), False for vectors."""
    return jax.tree.map(
        lambda v: v.replace(_logical_rank(v) >= 2),
        params,
        is_leaf=lambda x: isinstance(x, nnx.Variable),
    )


def _adamw(cfg: OptimConfig, schedule: optax.Schedule, params: nnx.State) -> optax.GradientTransformation:
    return optax.adamw(
        schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay, mask=decay_mask(params)
    )


OPTIMIZERS = registry.OPTIMIZERS.register_all({"adamw": _adamw})


def make_optimizer(cfg: OptimConfig, total_steps: int, params: nnx.State):
    """Return (optax transformation, learning-rate schedule)."""
    schedule = make_schedule(cfg, total_steps)
    parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm > 0 else []
    parts.append(OPTIMIZERS[cfg.name](cfg, schedule, params))
    return optax.chain(*parts), schedule
