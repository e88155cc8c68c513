"""The pure pieces of ensemble training (lmx.train.ensemble): member initialisation and the train and
eval steps vmapped over a leading member axis of the TrainState.

An ensemble state is a TrainState whose every leaf has a leading axis of size n (member i is
`member_slice(state, i)`, a TrainState like a normal run's). The train step is the normal run's
(`lmx.train.step.make_train_step`) under `jax.vmap`: each member's peak learning rate is an argument
(a float32 array [n]), not a constant of the program, so one compiled program trains any set of
learning rates. Inside the member step the config's optimizer and schedule are built by the normal
`make_optimizer` from a copy of `optim` whose `lr` is the member's traced value: the schedule's shape
(warmup, decay, min_lr_ratio) is the config's and its arithmetic the normal run's, and the optimizer
state has the normal run's tree, so a member's checkpoint is an ordinary checkpoint.

Initialisation draws each member's parameters from its own `train.seed` (vmapped over the seeds,
one program per distinct `model.init_std`), with the normal run's RNG streams, so member i starts
from exactly the parameters `lmx.train.loop.train` would draw for its config.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from lmx.config import Config, OptimConfig
from lmx.train.optimizer import make_optimizer
from lmx.train.state import TrainState, seeded_model
from lmx.train.step import make_eval_step, make_train_step


def optim_with_lr(optim: OptimConfig, lr) -> OptimConfig:
    """A copy of `optim` whose `lr` is `lr`, possibly a traced array (not validated: the config's own
    lr was). The schedules and optimizers use `optim.lr` only arithmetically, so they accept it."""
    out = copy.copy(optim)
    object.__setattr__(out, "lr", lr)  # frozen dataclass: bypasses __post_init__, which compares the value
    return out


def member_init(config: Config, tx, seed) -> TrainState:
    """`lmx.train.state.init_train_state` with a traced `seed` (int32 scalar): the same parameters and
    RNG key as the normal run of `config` with `train.seed = seed`."""
    params = nnx.state(seeded_model(config, seed=jax.random.key(seed)))
    return TrainState(
        params=params,
        opt_state=tx.init(params),
        step=jnp.zeros((), jnp.int32),
        rng=jax.random.key_data(jax.random.key(seed + 1)),
        skipped=jnp.zeros((), jnp.int32),
    )


def init_members(configs: Sequence[Config], tx, shardings) -> TrainState:
    """The stacked step-0 state of `configs` (member order), laid out in `shardings` (stacked).

    Members are grouped by `model.init_std` (a Python float of the model's initialisers); each group
    is one jitted `vmap` over its seeds."""
    groups: dict[float, list[int]] = {}
    for i, config in enumerate(configs):
        groups.setdefault(config.model.init_std, []).append(i)
    parts, order = [], []
    for indices in groups.values():
        config = configs[indices[0]]
        seeds = jnp.asarray([configs[i].train.seed for i in indices], jnp.int32)
        parts.append(jax.jit(jax.vmap(lambda seed, config=config: member_init(config, tx, seed)))(seeds))
        order += indices
    if len(parts) == 1:
        return jax.device_put(parts[0], shardings)
    inverse = np.argsort(np.asarray(order))
    joined = jax.tree.map(lambda *xs: jnp.concatenate(xs)[inverse], *parts)
    return jax.device_put(joined, shardings)


def stacked_shardings(shardings, mesh=None):
    """The member shardings with the (unsharded) member axis in front: P(a, b) -> P(None, a, b)."""
    return jax.tree.map(lambda s: NamedSharding(s.mesh if mesh is None else mesh, PartitionSpec(None, *s.spec)),
                        shardings)


def member_slice(state, i: int):
    """Member i of a stacked tree (a TrainState, params, metrics)."""
    return jax.tree.map(lambda x: x[i], state)


def stack_members(states: Sequence):
    """The stacked tree of member trees (the inverse of `member_slice`)."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *states)


def make_ensemble_train_step(graphdef, abstract_params, config: Config):
    """fn(state [n, ...], peak_lrs float32[n], batch) -> (state, metrics [n]): every member takes the
    normal train step (`make_train_step`) on the same batch with its own learning rate."""

    def member_step(state: TrainState, peak_lr, batch: dict):
        tx, schedule = make_optimizer(optim_with_lr(config.optim, peak_lr), config.train.steps, abstract_params)
        return make_train_step(graphdef, tx, schedule, config)(state, batch)

    return jax.vmap(member_step, in_axes=(0, 0, None))


def make_ensemble_eval_step(graphdef, token_bytes, token_chars, config: Config):
    """fn(params [n, ...], batch) -> sums [n] (the normal eval step per member)."""
    eval_step = make_eval_step(graphdef, token_bytes, token_chars, config=config)
    return jax.vmap(eval_step, in_axes=(0, None))
