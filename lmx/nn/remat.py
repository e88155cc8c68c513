"""Rematerialisation (activation checkpointing) policies for the per-layer block body.

`REMAT[config.remat](fn, prevent_cse)` wraps a function with `jax.checkpoint` (Chen et al. 2016,
arXiv:1604.06174): "none" stores every activation, "full" stores only the layer inputs and
recomputes the rest in the backward pass, "save_dots" stores the outputs of matmuls without batch
dimensions (the projections) and recomputes the cheap elementwise work and attention.
`prevent_cse=False` is safe (and faster) inside `jax.lax.scan`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

Wrap = Callable[[Callable, bool], Callable]


def _no_remat(fn: Callable, prevent_cse: bool = True) -> Callable:
    return fn


def _full(fn: Callable, prevent_cse: bool = True) -> Callable:
    return jax.checkpoint(fn, prevent_cse=prevent_cse)


def _save_dots(fn: Callable, prevent_cse: bool = True) -> Callable:
    return jax.checkpoint(
        fn, prevent_cse=prevent_cse, policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable
    )


REMAT: dict[str, Wrap] = {"none": _no_remat, "full": _full, "save_dots": _save_dots}
