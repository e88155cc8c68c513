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

    One jitted init per distinct `model.init_std` (a Python float of the model's initialisers) with the
    seed as its argument, called once per member; the states are stacked. (Vmapping the init over the
    seeds gives the same arrays, but XLA's compile time of the vmapped random draws grows with the
    number of members: 25 s for 8 tiny members against 8 s for one on a 2-core CPU.)"""
    inits: dict[float, object] = {}
    states = []
    for config in configs:
        std = config.model.init_std
        if std not in inits:
            inits[std] = jax.jit(lambda seed, config=config: member_init(config, tx, seed))
        states.append(inits[std](jnp.asarray(config.train.seed, jnp.int32)))
    return stack_members(states, shardings)


def stacked_shardings(shardings, mesh=None):
    """The member shardings with the (unsharded) member axis in front: P(a, b) -> P(None, a, b)."""
    return jax.tree.map(lambda s: NamedSharding(s.mesh if mesh is None else mesh, PartitionSpec(None, *s.spec)),
                        shardings)


def member_slice(tree, i: int):
    """Member i of a stacked tree (a TrainState, params, metrics), where it lies (host or device)."""
    return jax.tree.map(lambda x: x[i], tree)


def make_member_slicer(member_shardings=None):
    """jitted fn(stacked tree, i) -> member i's tree (laid out in `member_shardings`): one compiled
    program for every member (the index is an argument), where `member_slice` would dispatch and compile
    a slice per leaf shape."""
    return jax.jit(lambda tree, i: jax.tree.map(lambda x: x[i], tree), out_shardings=member_shardings)


def stack_members(states: Sequence, shardings=None):
    """The stacked tree of member trees (the inverse of `member_slice`), stacked on the host and laid out
    in `shardings`: no compilation (ensembles are of small models)."""
    stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *states)
    return jax.device_put(stacked, shardings) if shardings is not None else stacked


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
