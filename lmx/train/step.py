"""Pure, jittable train and eval steps over the typed train state (lmx.train.state.TrainState).

State: TrainState(params: nnx.State, opt_state: optax state, step: int32, rng: uint32 key data,
skipped: int32). The train step averages the gradient over all unmasked tokens of the global
batch; with `grad_accum_steps = k` the batch is split into k micro-batches whose gradient *sums*
are accumulated under a scan, so the update equals one step on the whole batch. A non-finite loss or
gradient leaves params and optimizer state unchanged and increments `skipped` (the loop then halts
or continues according to `train.nonfinite`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from lmx.config import Config
from lmx.train.forward import forward
from lmx.train.loss import loss_sums, safe_mean
from lmx.train.state import TrainState


def _forward(graphdef, params, batch, config: Config | None):
    """(logits, targets, loss_mask) of the architecture's objective (lmx.train.forward); a plain
    causal LM reading `inputs` when no config is given."""
    model = nnx.merge(graphdef, params)
    if config is None:
        return model(batch["inputs"]), batch["targets"], batch["loss_mask"]
    return forward(model, batch, config)


def _split_micro(batch: dict, k: int) -> dict:
    """[B, ...] -> [k, B/k, ...]; micro-batch i takes examples i, i+k, ... (keeps batch sharding)."""
    return jax.tree.map(lambda x: x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1), batch)


def make_loss_and_grads(graphdef, config: Config):
    """fn(params, batch) -> (sums, gradient sums); sums = {nll, z, tokens} over the whole batch.

    With `optim.grad_accum_steps = k` the batch is split into k micro-batches whose sums and
    gradient sums are accumulated under a scan; dividing by the token count afterwards gives
    exactly the mean-token gradient of the whole batch.
    """
    k = config.optim.grad_accum_steps
    z_coef = config.optim.z_loss

    def objective(params, batch):
        logits, targets, mask = _forward(graphdef, params, batch, config)
        sums = loss_sums(logits, targets, mask, z_coef)
        return sums["nll"] + sums["z"], sums

    grad_fn = jax.value_and_grad(objective, has_aux=True)

    def sums_and_grads(params, batch):
        if k == 1:
            (_, sums), grads = grad_fn(params, batch)
            return sums, grads

        def body(carry, micro):
            (_, sums), grads = grad_fn(params, micro)
            return jax.tree.map(jnp.add, carry, (sums, grads)), None

        zero_sums = {name: jnp.zeros((), jnp.float32) for name in ("nll", "tokens", "z")}
        zero = (zero_sums, jax.tree.map(jnp.zeros_like, params))
        (sums, grads), _ = jax.lax.scan(body, zero, _split_micro(batch, k))
        return sums, grads

    return sums_and_grads


def make_train_step(graphdef, tx: optax.GradientTransformation, schedule, config: Config):
    sums_and_grads = make_loss_and_grads(graphdef, config)

    def train_step(state: TrainState, batch: dict):
        params, opt_state = state.params, state.opt_state
        sums, grad_sums = sums_and_grads(params, batch)
        denominator = jnp.maximum(sums["tokens"], 1.0)
        grads = jax.tree.map(lambda g: g / denominator, grad_sums)
        loss = safe_mean(sums["nll"], sums["tokens"])
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(sums["z"])
        updates, new_opt_state = tx.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        keep = lambda new, old: jnp.where(finite, new, old)
        rng, _ = jax.random.split(jax.random.wrap_key_data(state.rng))
        new_state = TrainState(
            params=jax.tree.map(keep, new_params, params),
            opt_state=jax.tree.map(keep, new_opt_state, opt_state),
            step=state.step + 1,
            rng=jax.random.key_data(rng),
            skipped=state.skipped + jnp.where(finite, 0, 1).astype(jnp.int32),
        )
        metrics = {
            "loss": loss,
            "z_loss": safe_mean(sums["z"], sums["tokens"]),
            "grad_norm": grad_norm,
            "lr": schedule(state.step),
            "tokens": sums["tokens"],
            "finite": finite,
        }
        return new_state, metrics

    return train_step


def make_eval_step(graphdef, token_bytes: jax.Array, token_chars: jax.Array | None = None, *,
                   config: Config | None = None):
    """Sums over a batch: nll (nats), unmasked target tokens, the UTF-8 bytes those targets cover and,
    given the tokenizer's `token_chars`, the characters they cover."""

    def eval_step(params, batch: dict):
        logits, targets, mask = _forward(graphdef, params, batch, config)
        sums = loss_sums(logits, targets, mask)
        mask = mask.astype(jnp.float32)
        out = {
            "nll": sums["nll"],
            "tokens": sums["tokens"],
            "bytes": jnp.sum(token_bytes[targets].astype(jnp.float32) * mask),
        }
        if token_chars is not None:
            out["chars"] = jnp.sum(token_chars[targets].astype(jnp.float32) * mask)
        return out

    return eval_step
