"""Reading the multi-process start-up variables (no runtime started here)."""

import pytest

from lmx.errors import ConfigError
from lmx.parallel.distributed import distributed_settings, initialize_from_env


def test_no_variables_means_one_process():
    assert distributed_settings({}) is None
    assert initialize_from_env({}) is None
    assert distributed_settings({"TPU_WORKER_HOSTNAMES": "localhost"}) is None  # single-host TPU VM


def test_lmx_and_jax_variables():
    env = {"LMX_COORDINATOR": "10.0.0.1:1234", "LMX_NUM_PROCESSES": "4", "LMX_PROCESS_ID": "3"}
    assert distributed_settings(env) == {"coordinator_address": "10.0.0.1:1234", "num_processes": 4,
                                         "process_id": 3}
    env = {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0",
           "LMX_LOCAL_DEVICE_IDS": "0,1"}
    assert distributed_settings(env) == {"coordinator_address": "h:1", "num_processes": 2, "process_id": 0,
                                         "local_device_ids": [0, 1]}


def test_cloud_tpu_multi_host_is_auto_detected():
    assert distributed_settings({"TPU_WORKER_HOSTNAMES": "t1,t2,t3,t4"}) == {}


@pytest.mark.parametrize("env, message", [
    ({"LMX_COORDINATOR": "h:1", "LMX_NUM_PROCESSES": "2"}, r"^LMX_PROCESS_ID: multi-process start needs it too"),
    ({"LMX_COORDINATOR": "h:1", "LMX_NUM_PROCESSES": "2", "LMX_PROCESS_ID": "2"},
     r"^LMX_PROCESS_ID: process id 2 is not in \[0, 2\) \(LMX_NUM_PROCESSES=2\)"),
    ({"LMX_COORDINATOR": "h:1", "LMX_NUM_PROCESSES": "two", "LMX_PROCESS_ID": "0"},
     r"^LMX_NUM_PROCESSES: expected an integer, got 'two'"),
])
def test_bad_variables_fail_with_one_line(env, message):
    with pytest.raises(ConfigError, match=message):
        distributed_settings(env)


def test_explicit_auto_mode():
    assert distributed_settings({"LMX_DISTRIBUTED": "auto"}) == {}
    assert distributed_settings({"LMX_DISTRIBUTED": "off"}) is None
    with pytest.raises(ConfigError, match="^LMX_DISTRIBUTED: expected auto or off"):
        distributed_settings({"LMX_DISTRIBUTED": "yes please"})
