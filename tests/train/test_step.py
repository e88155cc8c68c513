"""The pure train step: learning, gradient accumulation, non-finite handling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmx.train.loop import build_trainer


def _batch(config, seed=0):
    rng = np.random.default_rng(seed)
    shape = (config.data.batch_size, config.data.seq_len)
    tokens = rng.integers(0, config.model.vocab_size, size=(shape[0], shape[1] + 1)).astype(np.int32)
    return {
        "inputs": jnp.asarray(tokens[:, :-1]),
        "targets": jnp.asarray(tokens[:, 1:]),
        "loss_mask": jnp.ones(shape, jnp.float32),
        "segment_ids": jnp.ones(shape, jnp.int32),
        "positions": jnp.broadcast_to(jnp.arange(shape[1], dtype=jnp.int32), shape),
    }


def _token_bytes(config):
    return np.ones(config.model.vocab_size, np.int32)


def test_loss_falls_on_a_fixed_batch(tiny):
    config = tiny.replace(**{"train.steps": 30, "optim.warmup_steps": 0, "optim.lr": 1e-2})
    trainer = build_trainer(config, _token_bytes(config))
    state = trainer.init_state()
    batch = _batch(config)
    losses = []
    for _ in range(30):
        state, metrics = trainer.train_step(state, batch)
        losses.append(float(metrics["loss"]))
    assert losses[0] == pytest.approx(np.log(config.model.vocab_size), rel=0.1)  # uniform at init
    assert losses[-1] < 0.5 * losses[0]
    assert int(state["step"]) == 30


def test_gradient_accumulation_equals_one_big_batch(tiny):
    from lmx.train.step import make_loss_and_grads

    config = tiny.replace(**{"data.batch_size": 4})
    batch = _batch(config, seed=1)
    batch["loss_mask"] = batch["loss_mask"].at[0, :10].set(0.0)  # unequal token counts per micro-batch
    trainer = build_trainer(config, _token_bytes(config))
    params = trainer.init_state()["params"]
    results = []
    for k in (1, 2, 4):
        fn = jax.jit(make_loss_and_grads(trainer.graphdef, config.replace(**{"optim.grad_accum_steps": k})))
        sums, grads = fn(params, batch)
        results.append((float(sums["nll"] / sums["tokens"]), float(sums["tokens"]), jax.device_get(grads)))
    loss1, tokens1, grads1 = results[0]
    assert tokens1 == config.data.batch_size * config.data.seq_len - 10
    for loss, tokens, grads in results[1:]:
        assert tokens == tokens1
        assert loss == pytest.approx(loss1, rel=1e-6)
        for a, b in zip(jax.tree.leaves(grads1), jax.tree.leaves(grads)):
            np.testing.assert_allclose(a / tokens1, b / tokens, rtol=1e-5, atol=1e-8)


def test_all_masked_batch_gives_zero_loss_and_keeps_training(tiny):
    trainer = build_trainer(tiny, _token_bytes(tiny))
    state = trainer.init_state()
    batch = _batch(tiny)
    batch["loss_mask"] = jnp.zeros_like(batch["loss_mask"])
    state, metrics = trainer.train_step(state, batch)
    assert float(metrics["loss"]) == 0.0
    assert bool(metrics["finite"])


def test_nonfinite_step_leaves_state_unchanged_and_counts(tiny):
    trainer = build_trainer(tiny, _token_bytes(tiny))
    state = trainer.init_state()
    # Poison one weight: the loss becomes NaN, so the update must be dropped.
    params = state["params"]
    leaves, treedef = jax.tree.flatten(params)
    leaves[0] = leaves[0].at[(0,) * leaves[0].ndim].set(jnp.nan)
    state = state.replace(params=jax.tree.unflatten(treedef, leaves))
    before = jax.device_get(state)
    after, metrics = trainer.train_step(state, _batch(tiny))
    assert not bool(metrics["finite"])
    assert int(after["skipped"]) == 1
    for a, b in zip(jax.tree.leaves(before["params"]), jax.tree.leaves(jax.device_get(after["params"]))):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree.leaves(before["opt_state"]), jax.tree.leaves(jax.device_get(after["opt_state"]))):
        np.testing.assert_array_equal(a, b)


def test_weight_decay_mask_skips_vectors(tiny):
    from lmx.train.optimizer import decay_mask

    model_params = nnx.state(nnx.eval_shape(lambda: __import__("lmx.nn", fromlist=["Transformer"]).Transformer(
        tiny.model, rngs=nnx.Rngs(0))))
    mask = decay_mask(model_params)
    flat = {jax.tree_util.keystr(path): bool(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(mask)}
    shapes = {jax.tree_util.keystr(path): leaf.shape for path, leaf in
              jax.tree_util.tree_leaves_with_path(model_params)}
    for key, decayed in flat.items():
        stacked = "blocks" in key
        logical_rank = len(shapes[key]) - (1 if stacked else 0)
        assert decayed == (logical_rank >= 2), key
    assert any(flat.values()) and not all(flat.values())
