import jax.numpy as jnp
import numpy as np

from lmx.train.loss import loss_sums, safe_mean


def numpy_nll(logits, targets):
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    return -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]


def test_masked_cross_entropy_matches_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 7)).astype(np.float32) * 3
    targets = rng.integers(0, 7, size=(2, 5))
    mask = (rng.random((2, 5)) > 0.3).astype(np.float32)
    sums = loss_sums(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(mask))
    want = (numpy_nll(logits, targets) * mask).sum() / mask.sum()
    np.testing.assert_allclose(float(safe_mean(sums["nll"], sums["tokens"])), want, rtol=1e-5)


def test_all_masked_batch_gives_zero_not_nan():
    logits = jnp.ones((2, 3, 5))
    sums = loss_sums(logits, jnp.zeros((2, 3), jnp.int32), jnp.zeros((2, 3)), z_loss=1e-4)
    assert float(safe_mean(sums["nll"], sums["tokens"])) == 0.0
    assert float(safe_mean(sums["z"], sums["tokens"])) == 0.0


def test_z_loss_is_squared_log_partition():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(1, 4, 6)).astype(np.float32)
    mask = np.ones((1, 4), np.float32)
    sums = loss_sums(jnp.asarray(logits), jnp.zeros((1, 4), jnp.int32), jnp.asarray(mask), z_loss=0.5)
    log_z = np.log(np.exp(logits).sum(-1))
    np.testing.assert_allclose(float(sums["z"]), 0.5 * (log_z**2).sum(), rtol=1e-5)
