"""Multi-process (multi-host) start-up and cross-process config agreement.

`initialize_from_env()` is called at the top of `lmx` (train and eval verbs) before JAX touches a
device. It calls `jax.distributed.initialize` when

- the coordinator variables are set: `LMX_COORDINATOR` (or `JAX_COORDINATOR_ADDRESS`), host:port of
  process 0; `LMX_NUM_PROCESSES` (or `JAX_NUM_PROCESSES`); `LMX_PROCESS_ID` (or `JAX_PROCESS_ID`).
  Optional `LMX_LOCAL_DEVICE_IDS` (comma-separated) restricts the devices this process uses.
- or `LMX_DISTRIBUTED=auto` (what scripts/launch_tpu_vm.sh sets), or it runs on a multi-host Cloud
  TPU slice (`TPU_WORKER_HOSTNAMES` lists more than one host, or `MEGASCALE_COORDINATOR_ADDRESS` is
  set): `jax.distributed.initialize()` with no arguments, which detects the cluster itself (Cloud
  TPU metadata, SLURM, Open MPI).

Otherwise it does nothing (one process). On CPU, cross-process collectives need the gloo
implementation; it is selected whenever the distributed runtime is started (harmless on GPU/TPU).

`check_config_agreement(config)` compares a hash of the config JSON across processes (one
`process_allgather`) and raises ConfigError naming the processes whose config differs from
process 0's. A no-op with one process.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils

from lmx import errors as lmx_errors
from lmx.errors import ConfigError

_VARIABLES = {
    "coordinator": ("LMX_COORDINATOR", "JAX_COORDINATOR_ADDRESS"),
    "num_processes": ("LMX_NUM_PROCESSES", "JAX_NUM_PROCESSES"),
    "process_id": ("LMX_PROCESS_ID", "JAX_PROCESS_ID"),
}


def _first(env: Mapping[str, str], names: tuple[str, ...]) -> tuple[str | None, str | None]:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return name, value
    return None, None


def _int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name}: expected an integer, got {value!r}") from None


def distributed_settings(env: Mapping[str, str] | None = None) -> dict | None:
    """The arguments `initialize_from_env` would pass to jax.distributed.initialize, or None.

    Returns {} for the argument-free Cloud TPU auto-detection. Raises ConfigError for a partial or
    inconsistent set of coordinator variables.
    """
    env = os.environ if env is None else env
    found = {key: _first(env, names) for key, names in _VARIABLES.items()}
    present = {key: v for key, v in found.items() if v[1] is not None}
    if present:
        missing = [_VARIABLES[key][0] for key in _VARIABLES if key not in present]
        if missing:
            given = ", ".join(f"{name}={value}" for name, value in present.values())
            raise ConfigError(f"{missing[0]}: multi-process start needs it too (given {given})")
        name_n, raw_n = present["num_processes"]
        name_i, raw_i = present["process_id"]
        n, i = _int(name_n, raw_n), _int(name_i, raw_i)
        if n < 1:
            raise ConfigError(f"{name_n}: must be >= 1, got {n}")
        if not 0 <= i < n:
            raise ConfigError(f"{name_i}: process id {i} is not in [0, {n}) ({name_n}={n})")
        settings = {"coordinator_address": present["coordinator"][1], "num_processes": n, "process_id": i}
        local = env.get("LMX_LOCAL_DEVICE_IDS", "").strip()
        if local:
            settings["local_device_ids"] = [_int("LMX_LOCAL_DEVICE_IDS", x) for x in local.split(",")]
        return settings
    mode = env.get("LMX_DISTRIBUTED", "").strip().lower()
    if mode in ("auto", "1", "true"):
        return {}  # JAX detects the cluster itself (Cloud TPU metadata, SLURM, Open MPI)
    if mode not in ("", "0", "false", "off"):
        raise ConfigError(f"LMX_DISTRIBUTED: expected auto or off, got {mode!r}")
    hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    if len(hosts) > 1 or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return {}
    return None


def is_initialized() -> bool:
    try:
        # a private module that may move between jax versions: imported inside the try
        from jax._src import distributed as _distributed

        return _distributed.global_state.client is not None
    except Exception:  # private API moved: assume not started
        return False


def initialize_from_env(env: Mapping[str, str] | None = None) -> dict | None:
    """Start the JAX distributed runtime when the environment asks for it; returns the settings used.

    Must run before the first JAX computation. Idempotent: a second call does nothing.
    """
    settings = distributed_settings(env)
    if settings is None or is_initialized():
        return settings
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**settings)
    return settings


def config_digest(config) -> str:
    """sha256 of the config's canonical JSON (sorted keys)."""
    return hashlib.sha256(config.to_json().encode()).hexdigest()


def check_config_agreement(config) -> None:
    """ConfigError unless every process holds the same config (compares sha256 of its JSON)."""
    if jax.process_count() == 1:
        return
    digest = config_digest(config)
    # 8 int32 words: x64 is off by default, so int64 would be truncated
    words = np.frombuffer(bytes.fromhex(digest), dtype=np.int32).copy()
    gathered = np.asarray(multihost_utils.process_allgather(words))  # [processes, 8]
    reference = gathered[0]
    differing = [p for p in range(gathered.shape[0]) if not np.array_equal(gathered[p], reference)]
    if differing:
        mine = "" if jax.process_index() == 0 else f"; this is process {jax.process_index()}"
        raise ConfigError(
            f"config: processes {differing} have a config that differs from process 0's "
            f"(sha256 of config JSON, {gathered.shape[0]} processes{mine}); start every process with "
            f"the same --config and --set overrides"
        )


def process_batch_rows(sharding, global_batch: int) -> np.ndarray:
    """Rows of the global batch this process must supply, in order, for `sharding`.

    `jax.make_array_from_process_local_data` places a process's local rows into the batch slices of
    its addressable devices, in device order; so for the assembled array to equal the global batch
    (row r at position r), a process must hold exactly the rows of those slices. With the usual
    meshes that is one contiguous block, `[p * local, (p + 1) * local)`.
    """
    shape = (global_batch,) + (1,) * (len(sharding.spec) - 1 if len(sharding.spec) else 0)
    index_map = sharding.addressable_devices_indices_map(shape)
    starts = sorted({(idx[0].start or 0, idx[0].stop if idx[0].stop is not None else global_batch)
                     for idx in index_map.values()})
    return np.concatenate([np.arange(a, b) for a, b in starts]) if starts else np.arange(0)


def on_process_zero(fn):
    """Run `fn()` on process 0 only (file-system work on a run directory) and return its result there.

    An LmxError it raises is raised on every process with the same message, so the others stop too
    instead of waiting at their next collective for a process that has exited. With one process this
    is just `fn()`.
    """
    result, error = None, None
    if jax.process_index() == 0:
        try:
            result = fn()
        except lmx_errors.LmxError as exc:
            error = exc
    if jax.process_count() == 1:
        if error is not None:
            raise error
        return result
    message = f"{type(error).__name__}:{error}".encode()[:4096] if error is not None else b""
    buffer = np.zeros(4096, np.uint8)
    buffer[:len(message)] = np.frombuffer(message, np.uint8)
    shared = bytes(np.asarray(multihost_utils.broadcast_one_to_all(buffer)).astype(np.uint8)).rstrip(b"\0")
    if error is not None:
        raise error
    if shared:
        name, _, text = shared.decode(errors="replace").partition(":")
        cls = getattr(lmx_errors, name, lmx_errors.LmxError)
        raise cls(f"{text} (reported by process 0)")
    return result
