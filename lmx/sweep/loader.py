"""Load a sweep file and resolve its trials, reporting every problem at once before any trial starts.

`load_sweep_file(path)` imports the file and returns its module-level `sweep`; `resolve_trials(sweep, out)`
turns it into `Trial`s (config resolved exactly as `lmx train --config BASE --set ...` will resolve it,
id, run directory OUT/trials/NAME--ID). Problems (no `sweep`, no trials, an unknown base config, unknown
keys, invalid values, a failing `derive`, duplicate names or configs) are gathered into one
`SweepFileError` whose message lists them joined by "; ", each naming the trial and the key.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path

from lmx.config import RENAMED_KEYS, Config, flat_config, leaf_keys, load_config
from lmx.errors import ConfigError
from lmx.sweep.spec import Overrides, Sweep, Trial, format_value, trial_id, trial_name

# set by the launcher from OUT/trials/NAME--ID: a sweep file must not choose it
SWEEP_OWNED_KEYS = ("train.run_dir",)


class SweepFileError(ConfigError):
    """Every problem of a sweep file (`problems`: one line each), raised before anything runs."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        count = f"{len(problems)} problems: " if len(problems) > 1 else ""
        super().__init__(f"{source}: {count}{'; '.join(problems)}")


def load_sweep_file(path: str | Path) -> Sweep:
    """Import a sweep file (a Python file) and return its module-level `sweep`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such sweep file")
    module_name = "lmx_sweep_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except (Exception, SystemExit) as exc:  # a sweep file is user code: say where it failed
        raise ConfigError(f"{path} failed to load: {type(exc).__name__}: {exc}") from None
    if not hasattr(module, "sweep"):
        raise ConfigError(f"{path} defines no `sweep` (expected sweep = Sweep(...))")
    if not isinstance(module.sweep, Sweep):
        raise ConfigError(f"{path}: `sweep` must be a lmx.sweep.Sweep, got {type(module.sweep).__name__}")
    return module.sweep


def _key_problem(key: str, known: set[str]) -> str | None:
    if not isinstance(key, str):
        return f"{key!r}: keys are dotted config keys such as model.d_model"
    if key in SWEEP_OWNED_KEYS:
        return f"{key}: set by the sweep (each trial runs in OUT/trials/NAME--ID); remove it"
    if key in known:
        return None
    if key in RENAMED_KEYS:
        return f"{key}: renamed to {RENAMED_KEYS[key]}"
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.8)
    return f"{key}: unknown config key" + (f" (did you mean {close[0]}?)" if close else "")


def _override_problems(where: str, overrides, known: set[str]) -> list[str]:
    """Unknown keys and values that cannot be passed to `--set`, one line each."""
    if not isinstance(overrides, dict):
        return [f"{where}: expected a dict of overrides, got {type(overrides).__name__}"]
    problems = []
    for key, value in overrides.items():
        problem = _key_problem(key, known)
        if problem is None:
            try:
                format_value(value)
            except ConfigError as exc:
                problem = f"{key}: {exc}"
        if problem:
            problems.append(f"{where}: {problem}")
    return problems


def _load_base(base) -> tuple[Config | None, str | None]:
    if not isinstance(base, str) or not base:
        return None, f"base: expected a config name or file path, got {base!r}"
    try:
        return load_config(base), None
    except ConfigError as exc:
        return None, "base: " + str(exc).removeprefix("--config: ")


def _label(index: int, overrides) -> str:
    try:
        return trial_name(overrides)
    except (ConfigError, AttributeError):
        return f"#{index + 1}"


def _resolve_one(sweep: Sweep, base: Config, fixed: Overrides, own: Overrides, name: str, out: Path,
                 known: set[str]) -> tuple[Trial | None, list[str]]:
    settings = {**fixed, **own}
    try:
        config = base.with_overrides([f"{k}={format_value(v)}" for k, v in settings.items()])
    except ConfigError as exc:
        return None, [f"trial {name}: {exc}"]
    if sweep.derive is not None:
        try:
            extra = sweep.derive(flat_config(config))
            if not isinstance(extra, dict):
                raise TypeError(f"must return a dict of overrides, got {type(extra).__name__}")
        except Exception as exc:  # user code
            return None, [f"trial {name}: derive failed: {type(exc).__name__}: {exc}"]
        problems = _override_problems(f"trial {name} (derived)", extra, known)
        if problems:
            return None, problems
        settings.update(extra)
        try:
            config = base.with_overrides([f"{k}={format_value(v)}" for k, v in settings.items()])
        except ConfigError as exc:
            derived_text = ", ".join(f"{k}={format_value(v)}" for k, v in extra.items())
            return None, [f"trial {name}: {exc} (derived: {derived_text})"]
    else:
        extra = {}
    identifier = trial_id(config)
    trial = Trial(name=name, id=identifier, overrides=dict(own), config=config,
                  run_dir=Path(out) / "trials" / f"{name}--{identifier}", settings=settings, derived=extra)
    return trial, []


def _duplicates(trials: list[tuple[int, Trial]]) -> list[str]:
    """Two trials with one name, or (by another name) with one config: each pair once."""
    problems, reported = [], set()
    for attribute, what in (("name", "are both named"), ("id", "resolve to the same config, id")):
        first: dict[str, tuple[int, Trial]] = {}
        for index, trial in trials:
            value = getattr(trial, attribute)
            if value not in first:
                first[value] = (index, trial)
                continue
            other_index, other = first[value]
            if (other_index, index) not in reported:
                reported.add((other_index, index))
                problems.append(f"trials #{other_index + 1} ({other.overrides}) and #{index + 1} "
                                f"({trial.overrides}) {what} {value}")
    return problems


def resolve_trials(sweep: Sweep, out: str | Path, source: str = "sweep") -> list[Trial]:
    """Every trial of `sweep`, resolved, with its run directory under `out`; SweepFileError listing every
    problem if any (`source` names the file in the message)."""
    problems: list[str] = []
    if not isinstance(sweep.name, str) or not sweep.name:
        problems.append(f"name: expected a non-empty string, got {sweep.name!r}")
    base, base_problem = _load_base(sweep.base)
    if base_problem:
        problems.append(base_problem)
    known = set(leaf_keys())
    fixed = sweep.fixed if sweep.fixed is not None else {}
    fixed_problems = _override_problems("fixed", fixed, known)
    problems += fixed_problems
    derive_ok = sweep.derive is None or callable(sweep.derive)
    if not derive_ok:
        problems.append(f"derive: expected a function (or derived(...)), got {type(sweep.derive).__name__}")
    raw = sweep.trials
    if isinstance(raw, (str, bytes, dict)) or not isinstance(raw, Sequence):
        problems.append(f"trials: expected a list of override dicts, got {type(raw).__name__}")
        raw = []
    elif not raw:
        problems.append(f"sweep {sweep.name} has no trials")
    resolved: list[tuple[int, Trial]] = []
    for index, own in enumerate(raw):
        name = _label(index, own)
        own_problems = _override_problems(f"trial {name}", own, known)
        problems += own_problems
        if own_problems or fixed_problems or base is None or not derive_ok:
            continue  # reported already; resolving would only repeat it
        trial, trial_problems = _resolve_one(sweep, base, fixed, own, name, Path(out), known)
        problems += trial_problems
        if trial is not None:
            resolved.append((index, trial))
    problems += _duplicates(resolved)
    if problems:
        raise SweepFileError(source, problems)
    return [trial for _, trial in resolved]
