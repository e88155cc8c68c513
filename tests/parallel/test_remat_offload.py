"""The offload remat policy's platform check (attention kernel choice: tests/nn, lmx.nn.attention_kernels)."""

import jax
import pytest


def test_offload_remat_platform_check(monkeypatch):
    from lmx.errors import ConfigError
    from lmx.nn.remat import REMAT

    kinds = {m.kind for m in jax.devices()[0].addressable_memories()}
    if "pinned_host" in kinds:
        assert callable(REMAT["offload"](lambda x: x))

    class _Memory:
        kind = "device"

    class _Device:
        def addressable_memories(self):
            return [_Memory()]

    monkeypatch.setattr(jax, "devices", lambda *a: [_Device()])
    with pytest.raises(ConfigError, match="^model.remat: offload needs a pinned_host memory space; backend"):
        REMAT["offload"](lambda x: x)
