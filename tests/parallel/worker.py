"""Scenarios run in a subprocess with forced host devices (XLA_FLAGS set by the caller).

    python tests/parallel/worker.py SCENARIO [ARGS...]   -> prints one JSON object as its last line
"""

from __future__ import annotations

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from lmx.config import Config, DataConfig, MeshConfig, ModelConfig, OptimConfig, TrainConfig
from lmx.errors import ConfigError
from lmx.parallel import make_mesh
from lmx.train.loop import build_trainer

STEPS = 5

# strategy -> mesh shape on 8 devices
MESHES = {
    "dp": {"data": 8},
    "fsdp": {"fsdp": 8},
    "tp": {"data": 4, "tensor": 2},
    "fsdp_tp": {"fsdp": 4, "tensor": 2},
}


def tiny_config(**overrides) -> Config:
    config = Config(
        name="parallel-test",
        model=ModelConfig(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, vocab_size=320,
                          max_seq_len=32),
        data=DataConfig(seq_len=16, batch_size=8),
        optim=OptimConfig(lr=1e-2, warmup_steps=0),
        train=TrainConfig(steps=STEPS),
    )
    return config.replace(**overrides) if overrides else config


def fixed_batch(config: Config, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    b, length = config.data.batch_size, config.data.seq_len
    tokens = rng.integers(0, config.model.vocab_size, size=(b, length + 1)).astype(np.int32)
    return {
        "inputs": tokens[:, :-1],
        "targets": tokens[:, 1:],
        "loss_mask": np.ones((b, length), np.float32),
        "segment_ids": np.ones((b, length), np.int32),
        "positions": np.broadcast_to(np.arange(length, dtype=np.int32), (b, length)).copy(),
    }


def token_bytes(config: Config) -> np.ndarray:
    return np.ones(config.model.vocab_size, np.int32)


def mesh_for(shape: dict, devices=None):
    devices = jax.devices() if devices is None else devices
    return make_mesh(MeshConfig(shape=shape), devices=devices)


def train_losses(config: Config, mesh) -> list[float]:
    trainer = build_trainer(config, token_bytes(config), mesh=mesh)
    state = trainer.init_state()
    batch = jax.device_put(fixed_batch(config), trainer.batch_sharding)
    losses = []
    for _ in range(STEPS):
        state, metrics = trainer.train_step(state, batch)
        losses.append(float(metrics["loss"]))
    return losses


def error_of(fn) -> str | None:
    try:
        fn()
    except ConfigError as exc:
        return str(exc)
    return None


def scenario_strategies() -> dict:
    out = {"device_count": jax.device_count()}
    base = tiny_config()
    out["single"] = train_losses(base, mesh_for({"data": 1}, jax.devices()[:1]))
    for strategy, shape in MESHES.items():
        out[strategy] = train_losses(base.replace(**{"mesh.strategy": strategy}), mesh_for(shape))
    # bad input, raised before anything is compiled
    tp4 = base.replace(**{"mesh.strategy": "tp"})
    out["kv_heads_error"] = error_of(lambda: build_trainer(tp4, token_bytes(tp4),
                                                           mesh=mesh_for({"data": 2, "tensor": 4})))
    odd = base.replace(**{"data.batch_size": 6})
    out["batch_error"] = error_of(lambda: build_trainer(odd, token_bytes(odd), mesh=mesh_for({"data": 8})))
    out["mesh_error"] = error_of(lambda: mesh_for({"data": 3}))
    return out


def scenario_restore(directory: str) -> dict:
    """Train on fsdp=4, save; restore into tensor=2 x data=2 and into one device; eval each."""
    from lmx.train.checkpoint import Checkpointer, abstract_with_shardings

    devices = jax.devices()
    config = tiny_config(**{"mesh.strategy": "fsdp_tp"})
    eval_batch = fixed_batch(config, seed=7)
    meshes = {
        "fsdp4": mesh_for({"fsdp": 4}, devices[:4]),
        "tensor2_data2": mesh_for({"data": 2, "tensor": 2}, devices[4:]),
        "single": mesh_for({"data": 1}, devices[:1]),
    }
    out = {}
    trainer = build_trainer(config, token_bytes(config), mesh=meshes["fsdp4"])
    state = trainer.init_state()
    batch = jax.device_put(fixed_batch(config), trainer.batch_sharding)
    for _ in range(3):
        state, _ = trainer.train_step(state, batch)
    out["saved_eval"] = float(trainer.eval_step(state["params"],
                                                jax.device_put(eval_batch, trainer.batch_sharding))["nll"])
    ckpt = Checkpointer(directory, async_save=False)
    ckpt.save(3, state, {}, {"step": 3})
    ckpt.close()
    for name, mesh in meshes.items():
        target = build_trainer(config, token_bytes(config), mesh=mesh)
        ckpt = Checkpointer(directory, async_save=False)
        step, restored, _, _ = ckpt.restore(abstract_with_shardings(target.abstract_state, target.state_shardings))
        ckpt.close()
        embed = restored["params"]["embed"]
        embed = getattr(embed, "value", embed) if not isinstance(embed, jax.Array) else embed
        out[name] = {
            "step": int(step),
            "eval": float(target.eval_step(restored["params"],
                                           jax.device_put(eval_batch, target.batch_sharding))["nll"]),
            "embed_spec": str(embed.sharding.spec),
            "embed_devices": len(embed.sharding.device_set),
        }
    return out


def scenario_bf16() -> dict:
    config = tiny_config(**{"model.compute_dtype": "bfloat16"})
    trainer = build_trainer(config, token_bytes(config), mesh=mesh_for({"fsdp": 2}, jax.devices()[:2]))
    state = trainer.init_state()
    batch = jax.device_put(fixed_batch(config), trainer.batch_sharding)
    losses = []
    for _ in range(3):
        state, metrics = trainer.train_step(state, batch)
        losses.append(float(metrics["loss"]))
    dtypes = {str(x.dtype) for x in jax.tree.leaves(state["params"])}
    opt_dtypes = {str(x.dtype) for x in jax.tree.leaves(state["opt_state"]) if jnp.issubdtype(x.dtype, jnp.floating)}
    return {"losses": losses, "param_dtypes": sorted(dtypes), "opt_dtypes": sorted(opt_dtypes)}


SCENARIOS = {"strategies": scenario_strategies, "restore": scenario_restore, "bf16": scenario_bf16}

if __name__ == "__main__":
    result = SCENARIOS[sys.argv[1]](*sys.argv[2:])
    print(json.dumps(result))
