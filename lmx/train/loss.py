"""Token-level cross-entropy with a loss mask, a safe denominator and an optional z-loss.

loss = sum_t m_t * (logsumexp(z_t) - z_t[y_t]) / max(sum_t m_t, 1), so an all-masked batch gives 0.
z-loss adds `coef * logsumexp(z_t)^2` per unmasked token (PaLM, Chowdhery et al. 2022, sec. 5).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_losses(logits_BxLxV: jax.Array, targets_BxL: jax.Array):
    """Per-token negative log-likelihood (float32) and log-partition function."""
    logits = logits_BxLxV.astype(jnp.float32)
    log_z_BxL = jax.nn.logsumexp(logits, axis=-1)
    target_logit_BxL = jnp.take_along_axis(logits, targets_BxL[..., None], axis=-1)[..., 0]
    return log_z_BxL - target_logit_BxL, log_z_BxL


def loss_sums(logits_BxLxV, targets_BxL, mask_BxL, z_loss: float = 0.0) -> dict:
    """Sums (not means) so micro-batches and devices combine exactly: nll, z, token count."""
    nll_BxL, log_z_BxL = token_losses(logits_BxLxV, targets_BxL)
    mask = mask_BxL.astype(jnp.float32)
    sums = {"nll": jnp.sum(nll_BxL * mask), "tokens": jnp.sum(mask)}
    sums["z"] = jnp.sum(jnp.square(log_z_BxL) * mask) * z_loss
    return sums


def safe_mean(total, count):
    return total / jnp.maximum(count, 1.0)
