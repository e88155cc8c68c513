"""Name the first non-finite tensor of a failed step: parameters, batch, logits, loss, gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmx.train.forward import forward
from lmx.train.loss import loss_sums, safe_mean


def _first_nonfinite(prefix: str, tree) -> str | None:
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        array = np.asarray(leaf)
        if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
            return f"{prefix}{jax.tree_util.keystr(path)}"
    return None


def first_nonfinite_tensor(graphdef, params, batch: dict, config) -> str:
    """Re-run the failed step's pieces in order and return the name of the first non-finite one."""
    found = _first_nonfinite("parameter ", params) or _first_nonfinite("batch", dict(batch))
    if found:
        return found

    def objective(params):
        logits, targets, mask = forward(nnx.merge(graphdef, params), batch, config)
        sums = loss_sums(logits, targets, mask, config.optim.z_loss)
        return safe_mean(sums["nll"] + sums["z"], sums["tokens"]), logits

    (loss, logits), grads = jax.jit(jax.value_and_grad(objective, has_aux=True))(params)
    if not bool(jnp.all(jnp.isfinite(logits))):
        return "logits"
    if not bool(jnp.isfinite(loss)):
        return "loss"
    return _first_nonfinite("gradient of ", grads) or "gradient norm (overflow)"
