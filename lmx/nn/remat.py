"""Rematerialisation (activation checkpointing) policies for the per-layer block body.

`REMAT[config.remat](fn, prevent_cse)` wraps a function with `jax.checkpoint` (Chen et al. 2016,
arXiv:1604.06174): "none" stores every activation, "full" stores only the layer inputs and
recomputes the rest in the backward pass, "save_dots" stores the outputs of matmuls without batch
dimensions (the projections) and recomputes the cheap elementwise work and attention; "offload"
saves the same matmul outputs but moves them to pinned host memory for the backward pass
(`offload_dot_with_no_batch_dims("device", "pinned_host")`), trading device memory for host
transfers. "offload" needs a backend with a `pinned_host` memory space (TPU, GPU; the CPU backend of
jax 0.10 has one too); elsewhere it raises ConfigError when the model is built.
`prevent_cse=False` is safe (and faster) inside `jax.lax.scan`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from lmx import registry
from lmx.errors import ConfigError

Wrap = Callable[[Callable, bool], Callable]


def _no_remat(fn: Callable, prevent_cse: bool = True) -> Callable:
    return fn


def _full(fn: Callable, prevent_cse: bool = True) -> Callable:
    return jax.checkpoint(fn, prevent_cse=prevent_cse)


def _save_dots(fn: Callable, prevent_cse: bool = True) -> Callable:
    return jax.checkpoint(
        fn, prevent_cse=prevent_cse, policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable
    )


def _offload(fn: Callable, prevent_cse: bool = True) -> Callable:
    kinds = sorted({m.kind for m in jax.devices()[0].addressable_memories()})
    if "pinned_host" not in kinds:
        raise ConfigError(
            f"model.remat: offload needs a pinned_host memory space; backend {jax.default_backend()} has "
            f"{', '.join(kinds)} (use save_dots or full)"
        )
    policy = jax.checkpoint_policies.offload_dot_with_no_batch_dims("device", "pinned_host")
    return jax.checkpoint(fn, prevent_cse=prevent_cse, policy=policy)


REMAT = registry.REMAT.register_all({"none": _no_remat, "full": _full, "save_dots": _save_dots, "offload": _offload})
