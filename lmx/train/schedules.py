"""Learning-rate schedules keyed by `optim.schedule`; every one starts with a linear warmup from 0.

cosine   warmup, then cosine decay to `min_lr_ratio * lr` at the last step (Loshchilov & Hutter 2017).
wsd      warmup-stable-decay: constant `lr`, then a linear decay to `min_lr_ratio * lr` over the final
         `decay_fraction` of the steps (Hu et al. 2024, MiniCPM, arXiv:2404.06395).
linear   warmup, then linear decay to `min_lr_ratio * lr`.
constant warmup, then constant `lr`.
"""

from __future__ import annotations

import optax

from lmx import registry
from lmx.config import OptimConfig


def _warmup(cfg: OptimConfig, after: optax.Schedule) -> optax.Schedule:
    if cfg.warmup_steps == 0:
        return after
    ramp = optax.linear_schedule(0.0, cfg.lr, cfg.warmup_steps)
    return optax.join_schedules([ramp, after], [cfg.warmup_steps])


def _cosine(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    decay_steps = max(total_steps - cfg.warmup_steps, 1)
    return _warmup(cfg, optax.cosine_decay_schedule(cfg.lr, decay_steps, alpha=cfg.min_lr_ratio))


def _linear(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    decay_steps = max(total_steps - cfg.warmup_steps, 1)
    return _warmup(cfg, optax.linear_schedule(cfg.lr, cfg.lr * cfg.min_lr_ratio, decay_steps))


def _constant(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    return _warmup(cfg, optax.constant_schedule(cfg.lr))


def _wsd(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    decay_steps = max(int(round(cfg.decay_fraction * total_steps)), 1)
    stable_steps = max(total_steps - cfg.warmup_steps - decay_steps, 0)
    stable = optax.constant_schedule(cfg.lr)
    decay = optax.linear_schedule(cfg.lr, cfg.lr * cfg.min_lr_ratio, decay_steps)
    return _warmup(cfg, optax.join_schedules([stable, decay], [stable_steps]))


SCHEDULES = registry.SCHEDULES.register_all({
    "cosine": _cosine,
    "wsd": _wsd,
    "linear": _linear,
    "constant": _constant,
})


def make_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    return SCHEDULES[cfg.schedule](cfg, total_steps)
