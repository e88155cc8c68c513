"""One typed, validated configuration tree.

`Config` gathers frozen dataclasses (`ModelConfig`, `DataConfig`, `OptimConfig`, `TrainConfig`,
`MeshConfig`, `EvalConfig`). Invalid values fail at construction with a `ConfigError` naming the
field. Config files are Python files defining `config` (a `Config`) or `get_config()`; command-line
overrides `dotted.key=value` are coerced to the field's declared type. Key names listed in
docs/ARCHITECTURE.md are stable: sweeps address them with `--set`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import types
import typing
from pathlib import Path
from typing import Any

from lmx.errors import ConfigError

# Registries of names the config accepts; the modules implementing them check they agree.
POSITIONS = ("rope", "none")
FFNS = ("swiglu", "geglu", "gelu", "relu", "silu")
NORMS = ("rmsnorm", "layernorm")
NORM_POSITIONS = ("pre",)
ATTENTION_IMPLS = ("xla", "cudnn", "auto")
DTYPES = ("float32", "bfloat16")
ARCHS = ("decoder",)
TOKENIZERS = ("byte_bpe", "bytes")
SCHEDULES = ("cosine", "wsd", "constant", "linear")
OPTIMIZERS = ("adamw",)
NONFINITE_POLICIES = ("halt", "skip")
MESH_AXES = ("data", "fsdp", "tensor", "expert")
REMAT_POLICIES = ("none", "full", "save_dots")


def _check(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{field}: {message}")


def _check_choice(value: str, choices: tuple[str, ...], field: str) -> None:
    _check(value in choices, field, f"unknown value {value!r}; choose one of {', '.join(choices)}")


def _check_positive(value: float, field: str) -> None:
    _check(value > 0, field, f"must be positive, got {value}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    arch: str = "decoder"
    d_model: int = 256
    n_layers: int = 4
    n_heads: int = 8
    n_kv_heads: int = 4
    head_dim: int = 0  # 0: d_model // n_heads
    d_ff: int = 0  # 0: derived from ffn_ratio, rounded up to ffn_multiple_of
    ffn_ratio: float = 8 / 3
    ffn_multiple_of: int = 32
    vocab_size: int = 4096
    max_seq_len: int = 256
    position: str = "rope"
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    ffn: str = "swiglu"
    norm: str = "rmsnorm"
    norm_eps: float = 1e-5
    norm_position: str = "pre"
    tie_embeddings: bool = True
    attention_impl: str = "xla"
    param_dtype: str = "float32"
    compute_dtype: str = "float32"
    init_std: float = 0.02
    remat: str = "none"
    scan_layers: bool = True

    def __post_init__(self):
        _check_choice(self.arch, ARCHS, "model.arch")
        for name in ("d_model", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "max_seq_len"):
            _check_positive(getattr(self, name), f"model.{name}")
        _check(self.head_dim >= 0, "model.head_dim", f"must be >= 0, got {self.head_dim}")
        _check(self.d_ff >= 0, "model.d_ff", f"must be >= 0, got {self.d_ff}")
        _check_positive(self.ffn_ratio, "model.ffn_ratio")
        _check_positive(self.ffn_multiple_of, "model.ffn_multiple_of")
        if self.head_dim == 0:
            _check(
                self.d_model % self.n_heads == 0,
                "model.n_heads",
                f"n_heads={self.n_heads} does not divide d_model={self.d_model} (or set model.head_dim)",
            )
        _check(
            self.n_heads % self.n_kv_heads == 0,
            "model.n_kv_heads",
            f"n_kv_heads={self.n_kv_heads} does not divide n_heads={self.n_heads}",
        )
        _check_choice(self.position, POSITIONS, "model.position")
        _check_choice(self.ffn, FFNS, "model.ffn")
        _check_choice(self.norm, NORMS, "model.norm")
        _check_choice(self.norm_position, NORM_POSITIONS, "model.norm_position")
        _check_choice(self.attention_impl, ATTENTION_IMPLS, "model.attention_impl")
        _check_choice(self.param_dtype, DTYPES, "model.param_dtype")
        _check_choice(self.compute_dtype, DTYPES, "model.compute_dtype")
        _check_choice(self.remat, REMAT_POLICIES, "model.remat")
        _check_positive(self.rope_theta, "model.rope_theta")
        _check_positive(self.norm_eps, "model.norm_eps")
        _check_positive(self.init_std, "model.init_std")
        _check(
            self.rope_scaling is None,
            "model.rope_scaling",
            "RoPE scaling methods are not available in this version of lmx; leave it unset",
        )
        if self.position == "rope":
            _check(self.resolved_head_dim % 2 == 0, "model.head_dim", "RoPE needs an even head dimension")

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim or self.d_model // self.n_heads

    @property
    def resolved_d_ff(self) -> int:
        if self.d_ff:
            return self.d_ff
        raw = self.ffn_ratio * self.d_model
        return int(self.ffn_multiple_of * math.ceil(raw / self.ffn_multiple_of))

    @property
    def is_gated(self) -> bool:
        return self.ffn in ("swiglu", "geglu")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    corpus: str = "stdlib"
    tokenizer: str = "byte_bpe"
    tokenizer_train_bytes: int = 8_000_000  # byte budget of training text the BPE trainer reads
    seq_len: int = 256
    batch_size: int = 16  # global batch, in sequences
    valid_fraction: float = 0.02
    shuffle_seed: int = 0
    cache_dir: str = ""  # "" -> $LMX_CACHE or ~/.cache/lmx
    max_corpus_bytes: int = 0  # 0: no limit; otherwise read documents until this many bytes

    def __post_init__(self):
        _check(bool(self.corpus.strip()), "data.corpus", "must name a corpus (stdlib, a path, a glob)")
        _check_choice(self.tokenizer, TOKENIZERS, "data.tokenizer")
        _check_positive(self.seq_len, "data.seq_len")
        _check_positive(self.batch_size, "data.batch_size")
        _check_positive(self.tokenizer_train_bytes, "data.tokenizer_train_bytes")
        _check(0 < self.valid_fraction < 1, "data.valid_fraction", f"must be in (0, 1), got {self.valid_fraction}")
        _check(self.max_corpus_bytes >= 0, "data.max_corpus_bytes", "must be >= 0")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    name: str = "adamw"
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    schedule: str = "cosine"
    decay_fraction: float = 0.2  # wsd: fraction of steps spent in the final decay
    weight_decay: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    clip_norm: float = 1.0  # 0: no clipping
    grad_accum_steps: int = 1
    z_loss: float = 0.0

    def __post_init__(self):
        _check_choice(self.name, OPTIMIZERS, "optim.name")
        _check_choice(self.schedule, SCHEDULES, "optim.schedule")
        _check_positive(self.lr, "optim.lr")
        _check(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")
        _check(self.warmup_steps >= 0, "optim.warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        _check(0 < self.decay_fraction <= 1, "optim.decay_fraction", "must be in (0, 1]")
        _check(self.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
        _check(0 <= self.b1 < 1 and 0 <= self.b2 < 1, "optim.b1", "betas must be in [0, 1)")
        _check_positive(self.eps, "optim.eps")
        _check(self.clip_norm >= 0, "optim.clip_norm", "must be >= 0 (0 disables clipping)")
        _check_positive(self.grad_accum_steps, "optim.grad_accum_steps")
        _check(self.z_loss >= 0, "optim.z_loss", "must be >= 0")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 200
    seed: int = 0
    eval_every: int = 100
    eval_batches: int = 4
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    async_checkpointing: bool = True
    log_every: int = 10
    nonfinite: str = "halt"
    run_dir: str = ""  # "" -> runs/<config name>-<timestamp>
    preemption_grace_seconds: float = 120.0

    def __post_init__(self):
        _check_positive(self.steps, "train.steps")
        for name in ("eval_every", "eval_batches", "checkpoint_every", "keep_checkpoints", "log_every"):
            _check_positive(getattr(self, name), f"train.{name}")
        _check_choice(self.nonfinite, NONFINITE_POLICIES, "train.nonfinite")
        _check_positive(self.preemption_grace_seconds, "train.preemption_grace_seconds")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    shape: dict = dataclasses.field(default_factory=lambda: {"data": -1})
    strategy: str = "dp"

    def __post_init__(self):
        _check(isinstance(self.shape, dict) and self.shape, "mesh.shape", "must be a non-empty mapping")
        for axis, size in self.shape.items():
            _check(axis in MESH_AXES, "mesh.shape", f"unknown axis {axis!r}; axes are {', '.join(MESH_AXES)}")
            _check(
                isinstance(size, int) and (size > 0 or size == -1),
                "mesh.shape",
                f"axis {axis} size must be a positive integer or -1, got {size!r}",
            )
        _check(list(self.shape.values()).count(-1) <= 1, "mesh.shape", "at most one axis may be -1")
        from lmx.parallel.rules import STRATEGIES  # local import: rules imports nothing from config

        _check_choice(self.strategy, tuple(STRATEGIES), "mesh.strategy")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    sample_prompts: tuple = ("def ", "class ", "import ")
    sample_tokens: int = 48

    def __post_init__(self):
        _check(all(isinstance(p, str) for p in self.sample_prompts), "eval.sample_prompts",
               "must be a list of strings")
        _check(self.sample_tokens >= 0, "eval.sample_tokens", "must be >= 0")


@dataclasses.dataclass(frozen=True)
class Config:
    name: str = "default"
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)

    def __post_init__(self):
        _check(bool(self.name) and "/" not in self.name and self.name not in (".", ".."), "name",
               f"must be a plain name, got {self.name!r}")
        _check(
            self.data.seq_len <= self.model.max_seq_len,
            "data.seq_len",
            f"data.seq_len={self.data.seq_len} exceeds model.max_seq_len={self.model.max_seq_len}",
        )
        if self.data.tokenizer == "bytes":
            _check(
                self.model.vocab_size >= 256 + 3,
                "model.vocab_size",
                f"the bytes tokenizer needs vocab_size >= 259, got {self.model.vocab_size}",
            )
        else:
            _check(
                self.model.vocab_size >= 256 + 3,
                "model.vocab_size",
                f"byte-level BPE needs vocab_size >= 259 (256 bytes + specials), got {self.model.vocab_size}",
            )
        _check(
            self.data.batch_size % self.optim.grad_accum_steps == 0,
            "optim.grad_accum_steps",
            f"grad_accum_steps={self.optim.grad_accum_steps} does not divide data.batch_size={self.data.batch_size}",
        )

    # --- conversion -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain JSON types (tuples become lists), exactly what config.json holds."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> Config:
        return _build(cls, data, prefix="")

    def replace(self, **overrides: Any) -> Config:
        """Copy with dotted-key overrides given as Python values: cfg.replace(**{"model.d_model": 64})."""
        tree = self.to_dict()
        for key, value in overrides.items():
            _set_dotted(tree, key, value, type(self))
        return Config.from_dict(tree)

    def with_overrides(self, assignments: list[str]) -> Config:
        """Copy with `dotted.key=value` strings from the command line, coerced to the field types."""
        tree = self.to_dict()
        for assignment in assignments:
            key, sep, raw = assignment.partition("=")
            key = key.strip()
            _check(bool(sep) and bool(key), "--set", f"expected dotted.key=value, got {assignment!r}")
            field_type = _field_type(type(self), key)
            _set_dotted(tree, key, coerce(raw.strip(), field_type, key), type(self))
        return Config.from_dict(tree)


# --- helpers ---------------------------------------------------------------------------------


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _field_type(cls, dotted: str):
    parts = dotted.split(".")
    current = cls
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(current):
            raise ConfigError(f"{'.'.join(parts[:i])}: is not a section; cannot set {dotted!r}")
        hints = _hints(current)
        if part not in hints:
            known = ", ".join(sorted(hints))
            where = ".".join(parts[:i]) or "config"
            raise ConfigError(f"{dotted}: unknown config key {part!r} in {where} (known: {known})")
        current = hints[part]
    return current


def _set_dotted(tree: dict, dotted: str, value: Any, cls) -> None:
    _field_type(cls, dotted)  # validates the key
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value


def _unwrap_optional(tp):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def coerce(raw: str, tp, key: str) -> Any:
    """Parse a command-line string into the declared type of `key`."""
    inner, optional = _unwrap_optional(tp)
    if optional and raw.lower() in ("none", "null", ""):
        return None
    if inner is bool:
        lowered = raw.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected a boolean (true/false), got {raw!r}")
    if inner is int:
        try:
            return int(raw.replace("_", ""))
        except ValueError:
            try:
                as_float = float(raw)
            except ValueError:
                as_float = math.nan
            if as_float.is_integer():
                return int(as_float)
            raise ConfigError(f"{key}: expected an integer, got {raw!r}") from None
    if inner is float:
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {raw!r}") from None
    if inner is str:
        return raw
    if inner is tuple or typing.get_origin(inner) is tuple:
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            raise ConfigError(f"{key}: expected a JSON list such as [\"a\", \"b\"], got {raw!r}") from None
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a JSON list, got {raw!r}")
        return tuple(value)
    if inner is dict or typing.get_origin(inner) is dict:
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            raise ConfigError(f"{key}: expected a JSON object such as {{\"data\": 2}}, got {raw!r}") from None
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a JSON object, got {raw!r}")
        return value
    raise ConfigError(f"{key}: is a section, not a value; set one of its fields")


def _check_value_type(value: Any, tp, key: str) -> Any:
    inner, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: must not be None")
    if inner is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (inner is tuple or typing.get_origin(inner) is tuple) and isinstance(value, list):
        value = tuple(value)
    expected = typing.get_origin(inner) or inner
    if expected is int and isinstance(value, bool):
        raise ConfigError(f"{key}: expected int, got bool {value!r}")
    if not isinstance(value, expected):
        raise ConfigError(f"{key}: expected {expected.__name__}, got {type(value).__name__} {value!r}")
    return value


def _build(cls, data: Any, prefix: str):
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = _hints(cls)
    unknown = sorted(set(data) - set(hints))
    if unknown:
        where = prefix.rstrip(".") or "config"
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown config key in {where} (known: {', '.join(sorted(hints))})"
        )
    kwargs = {}
    for key, value in data.items():
        tp = hints[key]
        full = f"{prefix}{key}"
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, f"{full}.")
        else:
            kwargs[key] = _check_value_type(value, tp, full)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # e.g. arithmetic on a bad value during validation
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {exc}") from None


# --- config files ----------------------------------------------------------------------------

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def resolve_config_path(name_or_path: str) -> Path:
    """`default` -> configs/default.py (cwd first, then the lmx checkout); paths are taken as given."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".py" and candidate.is_file():
        return candidate
    if candidate.suffix != ".py":
        for base in (Path.cwd() / "configs", CONFIG_DIR):
            path = base / f"{name_or_path}.py"
            if path.is_file():
                return path
    raise ConfigError(f"--config: no config file {name_or_path!r} (looked for it as a path and in configs/)")


def load_config(name_or_path: str = "default", overrides: list[str] | None = None) -> Config:
    """Load a Python config file defining `config` or `get_config()`, then apply overrides."""
    path = resolve_config_path(name_or_path)
    spec = importlib.util.spec_from_file_location(f"lmx_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ConfigError:
        raise
    except Exception as exc:  # a config file is user code; report where it failed
        raise ConfigError(f"--config: {path} failed to load: {type(exc).__name__}: {exc}") from None
    if hasattr(module, "get_config"):
        config = module.get_config()
    elif hasattr(module, "config"):
        config = module.config
    else:
        raise ConfigError(f"--config: {path} defines neither `config` nor `get_config()`")
    if isinstance(config, dict):
        config = Config.from_dict(config)
    if not isinstance(config, Config):
        raise ConfigError(f"--config: {path} must define a lmx.Config, got {type(config).__name__}")
    return config.with_overrides(overrides or [])
