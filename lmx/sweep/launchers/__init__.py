"""Launchers: where the trials of a sweep run. A launcher takes `Job`s (lmx.sweep.launchers.base) from
the runner and reports each process's start and exit code; the runner keeps the trials' status files.

`local`: a pool of worker processes on this machine, each pinned to its own CPUs (launchers/local.py).
`ray`: each job a Ray task on an existing Ray cluster (launchers/ray.py).
`tpu`: each job the multi-host `lmx train` of scripts/launch_tpu_vm.sh on a Cloud TPU slice (launchers/tpu.py).
"""

from lmx.sweep.launchers.base import Job
from lmx.sweep.launchers.local import LocalLauncher
from lmx.sweep.launchers.ray import RayLauncher, RayOptions
from lmx.sweep.launchers.tpu import TpuLauncher, TpuOptions

LAUNCHERS = {"local": LocalLauncher, "ray": RayLauncher, "tpu": TpuLauncher}

__all__ = ["LAUNCHERS", "Job", "RayOptions", "TpuOptions"]
