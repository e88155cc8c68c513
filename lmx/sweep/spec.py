"""What a sweep file declares: `Sweep`, the axis helpers, and the resolved `Trial`.

    from lmx.sweep import Sweep, grid, product
    sweep = Sweep(name="depth_width", base="default",
                  trials=product(grid("model.n_layers", [2, 4]), grid("model.d_model", [64, 128])),
                  fixed={"train.steps": 300})

A trial is a dict of dotted config keys -> Python values. Its name is read from its own overrides
(`n_layers-2_d_model-64`) and its id is the first 10 hex digits of the SHA-256 of the resolved config
(canonical JSON, sorted keys, run-location keys left out), so the same settings always get the same id
and run directory, whatever order the file lists them in. See docs/sweeps.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lmx.config import Config
from lmx.errors import ConfigError

# Keys that say only where a run reads or writes, not what it computes: left out of the trial id.
RUN_LOCATION_KEYS = ("train.run_dir", "data.cache_dir")

Overrides = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Derived:
    """Functions of a trial's resolved config (flattened: dotted key -> value) returning extra overrides,
    applied in order after the fixed and the trial's own overrides."""

    functions: tuple[Callable[[dict], Overrides], ...]

    def __call__(self, view: dict) -> Overrides:
        extra: Overrides = {}
        for function in self.functions:
            out = function({**view, **extra})
            if not isinstance(out, dict):
                raise TypeError(f"must return a dict of overrides, got {type(out).__name__}")
            extra.update(out)
        return extra


def derived(*functions: Callable[[dict], Overrides]) -> Derived:
    """`derive=derived(lambda t: {"train.steps": 10**7 // (t["data.batch_size"] * t["data.seq_len"])})`."""
    return Derived(tuple(functions))


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A sweep file's `sweep`: a base config, the trials (override dicts), overrides every trial gets
    (`fixed`), optional `derive`d overrides, and `ensemble` (trials differing only in ENSEMBLE_KEYS train
    as one vmapped program, lmx.train.ensemble)."""

    name: str
    base: str
    trials: Sequence[Overrides]
    fixed: Overrides = dataclasses.field(default_factory=dict)
    derive: Callable[[dict], Overrides] | None = None
    ensemble: bool = False


@dataclasses.dataclass(frozen=True)
class Trial:
    """One resolved trial. `overrides` are its own (they name it); `derived` those its `derive` added;
    `settings` are all the overrides it is trained with, in order: fixed, its own, derived."""

    name: str
    id: str
    overrides: Overrides
    config: Config
    run_dir: Path
    settings: Overrides = dataclasses.field(default_factory=dict)
    derived: Overrides = dataclasses.field(default_factory=dict)

    @property
    def dirname(self) -> str:
        return f"{self.name}--{self.id}"

    def assignments(self) -> list[str]:
        """`key=value` strings (what `lmx train --set` takes) for every setting."""
        return [f"{key}={format_value(value)}" for key, value in self.settings.items()]


# --- axes ------------------------------------------------------------------------------------


def grid(key: str, values: Sequence[Any]) -> list[Overrides]:
    """One override dict per value: grid("model.d_model", [64, 128]) -> [{"model.d_model": 64}, ...]."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ConfigError(f"grid({key!r}): values must be a list, got {type(values).__name__}")
    return [{key: value} for value in values]


def _merge(parts: Sequence[Overrides], helper: str) -> Overrides:
    merged: Overrides = {}
    for part in parts:
        clash = sorted(set(merged) & set(part))
        if clash:
            raise ConfigError(f"{helper}: two axes set {clash[0]}; each key belongs to one axis")
        merged.update(part)
    return merged


def product(*axes: Sequence[Overrides]) -> list[Overrides]:
    """Cartesian product of axes (lists of override dicts), merged; the last axis varies fastest."""
    return [_merge(parts, "product") for parts in itertools.product(*axes)]


def zipped(*axes: Sequence[Overrides]) -> list[Overrides]:
    """Element-wise combination of axes of equal length."""
    lengths = [len(axis) for axis in axes]
    if len(set(lengths)) > 1:
        raise ConfigError(f"zipped: axes have lengths {', '.join(map(str, lengths))}; they must be equal")
    return [_merge(parts, "zipped") for parts in zip(*axes)]


# --- random search ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sampler:
    """A distribution of one key for random_search: `loguniform`, `uniform` or `randint`."""

    kind: str
    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> Any:
        if self.kind == "loguniform":
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        if self.kind == "uniform":
            return float(rng.uniform(self.low, self.high))
        return int(rng.integers(self.low, self.high, endpoint=True))


def _sampler(kind: str, low, high) -> Sampler:
    if not low < high:
        raise ConfigError(f"{kind}({low}, {high}): low must be below high")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"loguniform({low}, {high}): bounds must be positive")
    return Sampler(kind, low, high)


def loguniform(low: float, high: float) -> Sampler:
    """exp(uniform(log low, log high)), e.g. learning rates."""
    return _sampler("loguniform", low, high)


def uniform(low: float, high: float) -> Sampler:
    return _sampler("uniform", low, high)


def randint(low: int, high: int) -> Sampler:
    """An integer in [low, high], both ends included."""
    return _sampler("randint", int(low), int(high))


def random_search(space: dict[str, Sampler | Sequence[Any]], n: int, seed: int = 0) -> list[Overrides]:
    """`n` trials, each key drawn from its sampler (a list: a uniform choice) by a numpy Generator seeded
    with `seed`; keys are drawn in sorted order, so the same file gives the same trials however it orders
    them."""
    rng = np.random.default_rng(seed)
    trials = []
    for _ in range(n):
        trial = {}
        for key in sorted(space):
            sampler = space[key]
            if isinstance(sampler, Sampler):
                trial[key] = sampler.sample(rng)
            elif isinstance(sampler, Sequence) and not isinstance(sampler, (str, bytes)) and sampler:
                trial[key] = _plain(sampler[int(rng.integers(len(sampler)))])
            else:
                raise ConfigError(f"random_search: {key} needs a non-empty list or loguniform/uniform/randint")
        trials.append(trial)
    return trials


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars (JSON, --set)."""
    return value.item() if isinstance(value, np.generic) else value


# --- names, ids, values ----------------------------------------------------------------------


def format_value(value: Any) -> str:
    """A Python value as `lmx train --set` parses it back: true/false, repr of floats (exact), JSON for
    lists and dicts, `none`."""
    value = _plain(value)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (int, str)):
        return str(value)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    raise ConfigError(f"cannot pass a {type(value).__name__} ({value!r}) as an override")


def _name_value(value: Any) -> str:
    value = _plain(value)
    if isinstance(value, float):
        return f"{value:g}".replace("e+", "e")  # 1e+09 -> 1e09 (not 1e-09 once + is replaced)
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, separators=(",", ":"))
    return format_value(value)


def trial_name(overrides: Overrides) -> str:
    """`{"model.n_layers": 2, "model.d_model": 64}` -> `n_layers-2_d_model-64` (last key segment, value as
    %g for floats; characters outside [A-Za-z0-9._-] become -); `base` for a trial with no overrides."""
    parts = [f"{key.rsplit('.', 1)[-1]}-{_name_value(value)}" for key, value in overrides.items()]
    return re.sub(r"[^A-Za-z0-9._-]", "-", "_".join(parts)) or "base"


def identity(config: Config) -> dict:
    """The config as the trial id sees it: to_dict() without RUN_LOCATION_KEYS."""
    tree = config.to_dict()
    for key in RUN_LOCATION_KEYS:
        section, field = key.split(".")
        tree[section].pop(field, None)
    return tree


def trial_id(config: Config) -> str:
    """First 10 hex digits of SHA-256 over the canonical JSON (sorted keys) of `identity(config)`."""
    blob = json.dumps(identity(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:10]
