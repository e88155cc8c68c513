"""Experiment sweeps: sweep files, launchers (local, ray, tpu), the results store, tables, plots and
comparisons. See docs/sweeps.md.

A sweep file (experiments/NAME.py) defines `sweep = Sweep(...)` with the helpers exported here;
`lmx sweep run FILE --out OUT` runs it (lmx.sweep.runner), `lmx sweep status OUT` shows it.
"""

from lmx.sweep.spec import (
    Sweep,
    Trial,
    derived,
    grid,
    loguniform,
    product,
    randint,
    random_search,
    uniform,
    zipped,
)
from lmx.train.ensemble import ENSEMBLE_KEYS  # the keys in which ensemble members may differ

__all__ = ["ENSEMBLE_KEYS", "Sweep", "Trial", "derived", "grid", "loguniform", "product", "randint",
           "random_search", "uniform", "zipped"]
