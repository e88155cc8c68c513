"""The train state: one typed pytree that the jitted steps take and return and Orbax saves.

`TrainState(params, opt_state, step, rng, skipped)` is a frozen dataclass registered as a JAX pytree
(`jax.tree_util.register_dataclass`), so

- `jax.jit` takes and returns it; its shardings are a TrainState of `NamedSharding`s
  (`lmx.parallel.shardings.tree_shardings(abstract_state, mesh, rules)`), given explicitly as
  `in_shardings`/`out_shardings` (`lmx.train.loop.build_trainer`);
- `jax.eval_shape(init)` gives its abstract form (`ShapeDtypeStruct`s, nnx Variables kept, so the
  parameters' logical axis names stay readable);
- Orbax saves and restores it as it is (`lmx.train.checkpoint.Checkpointer`): a dataclass's fields
  are stored like dict keys, `params`, `opt_state`, `step`, `rng`, `skipped`, which is the on-disk
  layout of the dict state of earlier lmx versions. Their checkpoints restore into a TrainState,
  and `Checkpointer.restore_params` reads the `params` subtree alone.

Change a field with `state.replace(params=...)`. `state["params"]` (read access by field name) is
kept for code written against the former dict state.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from lmx.config import Config
from lmx.nn import build_model
from lmx.parallel.report import layout_report
from lmx.train.optimizer import make_optimizer


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    params: Any  # nnx.State of the model's parameters (Variables carry logical axis names)
    opt_state: Any  # the optax state of make_optimizer's transformation
    step: Any  # int32 scalar: train steps taken, skipped ones included
    rng: Any  # uint32 key data (jax.random.key_data), split once per step
    skipped: Any  # int32 scalar: steps whose update was dropped because it was not finite

    def replace(self, **changes) -> TrainState:
        return dataclasses.replace(self, **changes)

    def __getitem__(self, name: str):
        """`state["params"]`: a field by name, for code written against the former dict state."""
        if name not in _FIELDS:
            raise KeyError(name)
        return getattr(self, name)


_FIELDS = tuple(f.name for f in dataclasses.fields(TrainState))


def seeded_model(config: Config, seed: int | None = None) -> nnx.Module:
    """`lmx.nn.build_model(config.model)` with its parameters drawn from `train.seed` (or `seed`)."""
    return build_model(config.model, rngs=nnx.Rngs(params=config.train.seed if seed is None else seed))


def init_train_state(config: Config, tx) -> TrainState:
    """The state at step 0: seeded parameters, `tx.init` of them, RNG key `train.seed + 1`."""
    params = nnx.state(seeded_model(config))
    return TrainState(
        params=params,
        opt_state=tx.init(params),
        step=jnp.zeros((), jnp.int32),
        rng=jax.random.key_data(jax.random.key(config.train.seed + 1)),
        skipped=jnp.zeros((), jnp.int32),
    )


def abstract_train_state(config: Config) -> TrainState:
    """`init_train_state` as ShapeDtypeStructs (Variables kept), built without allocating anything."""
    abstract_params = nnx.state(nnx.eval_shape(lambda: seeded_model(config)))
    tx, _ = make_optimizer(config.optim, config.train.steps, abstract_params)
    return jax.eval_shape(lambda: init_train_state(config, tx))


def sharding_report(config: Config, n_devices: int | None = None) -> dict:
    """`lmx info --sharding`: how this config's train state lays out over its mesh of `n_devices`
    (an abstract mesh: no devices needed); see `lmx.parallel.report.layout_report`."""
    state = abstract_train_state(config)
    return layout_report(config, state.params, state.opt_state, n_devices)
