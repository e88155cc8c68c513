import math

import numpy as np
import pytest

from lmx.config import OptimConfig
from lmx.train.schedules import make_schedule


def reference(cfg: OptimConfig, total: int, step: int) -> float:
    """Independent transcription of the schedule definitions in lmx/train/schedules.py's docstring."""
    lr, low = cfg.lr, cfg.lr * cfg.min_lr_ratio
    if step < cfg.warmup_steps:
        return lr * step / cfg.warmup_steps
    t = step - cfg.warmup_steps
    span = max(total - cfg.warmup_steps, 1)
    if cfg.schedule == "constant":
        return lr
    if cfg.schedule == "cosine":
        frac = min(t / span, 1.0)
        return low + (lr - low) * 0.5 * (1 + math.cos(math.pi * frac))
    if cfg.schedule == "linear":
        return lr + (low - lr) * min(t / span, 1.0)
    if cfg.schedule == "wsd":
        decay = max(round(cfg.decay_fraction * total), 1)
        stable = max(total - cfg.warmup_steps - decay, 0)
        if t < stable:
            return lr
        return lr + (low - lr) * min((t - stable) / decay, 1.0)
    raise AssertionError(cfg.schedule)


@pytest.mark.parametrize("name", ["cosine", "wsd", "linear", "constant"])
@pytest.mark.parametrize("warmup", [0, 10])
def test_schedule_matches_reference(name, warmup):
    cfg = OptimConfig(lr=1e-3, min_lr_ratio=0.1, warmup_steps=warmup, schedule=name, decay_fraction=0.25)
    total = 100
    schedule = make_schedule(cfg, total)
    got = np.array([float(schedule(s)) for s in range(total + 1)])
    want = np.array([reference(cfg, total, s) for s in range(total + 1)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)
