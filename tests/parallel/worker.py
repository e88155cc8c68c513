"""Scenarios run in a subprocess with forced host devices (XLA_FLAGS set by the caller).

    python tests/parallel/worker.py SCENARIO [ARGS...]   -> prints one JSON object as its last line
"""

from __future__ import annotations

import json
import sys

import jax
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


def train_losses(config: Config, mesh, activation_constraints: bool = False) -> list[float]:
    import contextlib

    from lmx.parallel.activations import activation_sharding
    from lmx.parallel.rules import STRATEGIES

    trainer = build_trainer(config, token_bytes(config), mesh=mesh)
    state = trainer.init_state()
    batch = jax.device_put(fixed_batch(config), trainer.batch_sharding)
    losses = []
    for _ in range(STEPS):
        # the step is traced on its first call: inside the context the activation constraints apply
        context = activation_sharding(mesh, STRATEGIES[config.mesh.strategy]) if activation_constraints \
            else contextlib.nullcontext()
        with context:
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
    for strategy in ("fsdp", "fsdp_tp"):  # with sharding constraints on the residual stream
        out[f"{strategy}+activations"] = train_losses(base.replace(**{"mesh.strategy": strategy}),
                                                      mesh_for(MESHES[strategy]), activation_constraints=True)
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
        embed = embed if isinstance(embed, jax.Array) else embed[...]
        out[name] = {
            "step": int(step),
            "eval": float(target.eval_step(restored["params"],
                                           jax.device_put(eval_batch, target.batch_sharding))["nll"]),
            "embed_spec": str(embed.sharding.spec),
            "embed_devices": len(embed.sharding.device_set),
        }
    return out


def _init_process(coordinator: str, process_id: str, processes: str = "2") -> None:
    from lmx.parallel.distributed import initialize_from_env

    initialize_from_env({"LMX_COORDINATOR": coordinator, "LMX_NUM_PROCESSES": processes,
                         "LMX_PROCESS_ID": process_id})


def _pipeline_rows(global_batch: int, p: int, n: int) -> list[int]:
    """Which global rows lmx.data.pipeline gives process p: window w of a stream starts with token w."""
    from lmx.config import DataConfig
    from lmx.data.pipeline import valid_batches

    seq_len = 4
    tokens = np.repeat(np.arange(global_batch + 1, dtype=np.int32), seq_len)  # window w = [w, w, w, w, w+1]
    config = DataConfig(seq_len=seq_len, batch_size=global_batch)
    batch = valid_batches(tokens, config, 1, p, n, eos_id=10**6, pad_id=10**6 + 1)[0]
    return [int(r) for r in batch["inputs"][:, 0]]


def scenario_mp_batch(coordinator: str, process_id: str) -> dict:
    """Assemble a global batch from the pipeline's per-process rows; report the global row order."""
    from jax.experimental import multihost_utils

    from lmx.parallel.distributed import process_batch_rows
    from lmx.parallel.rules import STRATEGIES
    from lmx.parallel.shardings import batch_sharding
    from lmx.train.loop import to_global

    _init_process(coordinator, process_id)
    p, n = jax.process_index(), jax.process_count()
    mesh = mesh_for({"data": -1})
    sharding = batch_sharding(mesh, STRATEGIES["dp"])
    global_batch = 8
    rows = np.arange(global_batch, dtype=np.int32)
    out = {"process": p, "processes": n, "devices": jax.device_count()}
    out["pipeline_rows"] = _pipeline_rows(global_batch, p, n)
    mine = process_batch_rows(sharding, global_batch)
    fixed = to_global({"rows": rows[mine]}, sharding)["rows"]
    out["block_rows"] = [int(r) for r in np.asarray(mine)]
    out["block_order"] = np.asarray(multihost_utils.process_allgather(fixed, tiled=True)).tolist()
    return out


def scenario_mp_config(coordinator: str, process_id: str) -> dict:
    from lmx.parallel.distributed import check_config_agreement

    _init_process(coordinator, process_id)
    same = tiny_config()
    check_config_agreement(same)  # agrees: no error
    differing = tiny_config(**{"optim.lr": 0.5}) if jax.process_index() == 1 else same
    return {"process": jax.process_index(), "error": error_of(lambda: check_config_agreement(differing))}


def scenario_elastic_train(coordinator: str, process_id: str, processes: str, run_dir: str, cache_dir: str,
                           stop_at: str, resume: str) -> dict:
    """`lmx.train.loop.train` of tiny (8 steps, checkpoints every 4) on this process count ("-" as the
    coordinator: one process), stopping after step `stop_at` (0: never) or resuming; reports the token ids
    of every global batch this process saw, by step and global row."""
    from lmx.config import load_config
    from lmx.train.hooks import hook
    from lmx.train.loop import train

    if coordinator != "-":
        _init_process(coordinator, process_id, processes)
    config = load_config("tiny", [f"data.cache_dir={cache_dir}", "train.log_every=1", "train.eval_every=8",
                                  "train.checkpoint_every=4", "eval.sample_tokens=0"])
    batches = {}

    @hook(every=1)
    def record(loop, event):
        rows = {}
        for shard in event.batch["inputs"].addressable_shards:
            if shard.replica_id == 0:
                start = shard.index[0].start or 0
                for offset, row in enumerate(np.asarray(shard.data)):
                    rows[start + offset] = row.tolist()
        batches[event.step] = rows
        if event.step == int(stop_at):
            loop.stop("preempted")

    summary = train(config, run_dir=run_dir, resume=resume == "1", show_progress=False, hooks=[record])
    return {"process": jax.process_index(), "processes": jax.process_count(), "devices": jax.device_count(),
            "status": summary["status"], "resumed_from": summary["resumed_from"], "batches": batches}


SCENARIOS = {"strategies": scenario_strategies, "restore": scenario_restore,
             "mp_batch": scenario_mp_batch, "mp_config": scenario_mp_config, "elastic_train": scenario_elastic_train}

if __name__ == "__main__":
    result = SCENARIOS[sys.argv[1]](*sys.argv[2:])
    print(json.dumps(result))
