"""Bad parallel configuration fails before compilation with a one-line ConfigError (single device)."""

import numpy as np
import pytest

from lmx.config import MeshConfig
from lmx.errors import ConfigError
from lmx.parallel import make_mesh
from lmx.parallel.mesh import resolve_mesh_shape


def test_mesh_product_must_equal_device_count():
    with pytest.raises(ConfigError, match=r"^mesh.shape: \{'data': 2, 'tensor': 2\} uses 4 devices but 8 are"):
        resolve_mesh_shape({"data": 2, "tensor": 2}, 8)
    with pytest.raises(ConfigError, match=r"^mesh.shape: 8 devices cannot be split with the fixed axes"):
        resolve_mesh_shape({"data": -1, "tensor": 3}, 8)
    assert resolve_mesh_shape({"fsdp": -1, "tensor": 2}, 8) == {"data": 1, "fsdp": 4, "tensor": 2, "expert": 1}


def test_make_mesh_on_this_process_checks_the_device_count():
    with pytest.raises(ConfigError, match="uses 2 devices but 1 are available"):
        make_mesh(MeshConfig(shape={"data": 2}))


def test_batch_divisibility_checked_by_build_trainer(tiny):
    from lmx.train.loop import build_trainer

    # grad accumulation micro-batch (3) vs data-parallel size 1 is fine; a process-count check exists too
    config = tiny.replace(**{"data.batch_size": 3})
    trainer = build_trainer(config, np.ones(config.model.vocab_size, np.int32))
    assert trainer.batch_sharding.spec[0] in ("data", ("data",))


def test_bf16_compute_train_step_keeps_float32_params_and_opt_state(tiny):
    import jax
    import jax.numpy as jnp

    from lmx.train.loop import build_trainer

    config = tiny.replace(**{"model.compute_dtype": "bfloat16", "data.seq_len": 16})
    trainer = build_trainer(config, np.ones(config.model.vocab_size, np.int32))
    state = trainer.init_state()
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, config.model.vocab_size, size=(4, 17)).astype(np.int32)
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "loss_mask": np.ones((4, 16), np.float32),
             "segment_ids": np.ones((4, 16), np.int32), "positions": np.tile(np.arange(16, dtype=np.int32), (4, 1))}
    for _ in range(2):
        state, metrics = trainer.train_step(state, batch)
        assert np.isfinite(float(metrics["loss"]))
    assert {x.dtype for x in jax.tree.leaves(state["params"])} == {jnp.dtype("float32")}
    floats = [x for x in jax.tree.leaves(state["opt_state"]) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and {x.dtype for x in floats} == {jnp.dtype("float32")}
