"""Registries: the one place each accepted config name lives, next to what it selects.

A `Registry` maps names to implementations. The module implementing a variant registers it
(`NORMS.register("rmsnorm")(RMSNorm)`), and config validation reads the same table
(`NORMS.check(value, "model.norm.kind")`), so a name is written once. The tables are declared
here, below every other lmx module, so `lmx.config` can read them without importing `lmx.nn`; the
implementing modules fill them when `import lmx` loads the package (lmx/__init__.py imports them
before anything can build a config).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from lmx.errors import ConfigError


class Registry:
    """Named implementations of one config setting (`setting` is the dotted key that selects them)."""

    def __init__(self, setting: str):
        self.setting = setting
        self._entries: dict[str, Any] = {}

    def register(self, name: str, value: Any = None) -> Callable[[Any], Any] | Any:
        """`registry.register("name", value)`, or `@registry.register("name")` as a decorator."""
        if value is not None:
            self._add(name, value)
            return value

        def decorate(obj):
            self._add(name, obj)
            return obj

        return decorate

    def register_all(self, entries: dict[str, Any]) -> Registry:
        """Register every entry of a dict; returns the registry (`TABLE = REGISTRY.register_all({...})`)."""
        for name, value in entries.items():
            self._add(name, value)
        return self

    def _add(self, name: str, value: Any) -> None:
        if name in self._entries:
            raise ValueError(f"{self.setting}: {name!r} is registered twice")
        self._entries[name] = value

    def names(self) -> tuple[str, ...]:
        if not self._entries:
            raise RuntimeError(f"the registry of {self.setting} is empty: `import lmx` fills it")
        return tuple(self._entries)

    def check(self, name: str, field: str | None = None) -> None:
        """A ConfigError naming the setting unless `name` is registered."""
        if name not in self.names():
            raise ConfigError(f"{field or self.setting}: unknown value {name!r}; choose one of "
                              f"{', '.join(self.names())}")

    def __getitem__(self, name: str) -> Any:
        self.check(name)
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self):
        return self._entries.items()

    def keys(self):
        return self._entries.keys()

    def values(self):
        return self._entries.values()

    def __repr__(self) -> str:
        return f"Registry({self.setting}: {', '.join(self._entries)})"


# model
ARCHITECTURES = Registry("model.arch")
LAYER_TYPES = Registry("model.layer_pattern")  # token mixers by letter: A attention, M selective SSM
POSITIONS = Registry("model.position.kind")
ROPE_LAYOUTS = Registry("model.position.rope.layout")
ATTENTION_KINDS = Registry("model.attention.kind")
ATTENTION_KERNELS = Registry("model.attention.kernel")
ATTENTION_PATTERNS = Registry("model.attention.pattern")
LINEAR_FEATURE_MAPS = Registry("model.attention.feature_map")
FFN_ACTIVATIONS = Registry("model.ffn.activation")
NORMS = Registry("model.norm.kind")
NORM_PLACEMENTS = Registry("model.norm.placement")
INITS = Registry("model.init")
POOLINGS = Registry("model.pooling")
DTYPES = Registry("model.param_dtype")
REMAT = Registry("model.remat")
# data
TOKENIZERS = Registry("data.tokenizer")
NORMALIZATIONS = Registry("data.normalization")
# training and scale-out
SCHEDULES = Registry("optim.schedule")
OPTIMIZERS = Registry("optim.name")
STRATEGIES = Registry("mesh.strategy")
