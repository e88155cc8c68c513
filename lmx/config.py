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
import re
import types
import typing
from pathlib import Path
from typing import Any

from lmx.errors import ConfigError

# Registries of names the config accepts; the modules implementing them check they agree.
POSITIONS = ("rope", "none", "sinusoidal", "learned", "shaw", "t5", "alibi", "xpos", "base_n")
FFNS = ("swiglu", "geglu", "glu", "reglu", "gelu", "gelu_tanh", "relu", "silu")
NORMS = ("rmsnorm", "layernorm")
NORM_POSITIONS = ("pre", "post", "deepnorm", "rezero")
ATTENTION_IMPLS = ("plain", "xla", "cudnn", "splash", "auto")
ATTENTION_KINDS = ("softmax", "linear")
ATTENTION_PATTERNS = ("dense", "sliding_window", "block_sparse")
LINEAR_FEATURE_MAPS = ("elu1", "relu")
ROPE_LAYOUTS = ("half", "interleaved")
INITS = ("scaled", "normal", "small")
POOLINGS = ("mean", "first")
LAYER_TYPES = ("A", "M")  # A: attention block, M: selective state-space (Mamba-style) block
DTYPES = ("float32", "bfloat16")
ARCHS = ("decoder", "encoder", "encoder_decoder", "prefix_lm")
OBJECTIVE_OF_ARCH = {"decoder": "causal_lm", "encoder": "mlm", "encoder_decoder": "span_corruption",
                     "prefix_lm": "prefix_lm"}
TOKENIZERS = ("byte_bpe", "bytes", "bpe", "wordpiece", "unigram")  # or "file:PATH" (see docs/tokenizers.md)
NORMALIZATIONS = ("none", "nfc", "nfkc")
SCHEDULES = ("cosine", "wsd", "constant", "linear")
OPTIMIZERS = ("adamw",)
NONFINITE_POLICIES = ("halt", "skip")
MESH_AXES = ("data", "fsdp", "tensor", "expert")
REMAT_POLICIES = ("none", "full", "save_dots", "offload")


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
    attention_impl: str = "auto"
    param_dtype: str = "float32"
    compute_dtype: str = "float32"
    init_std: float = 0.02
    remat: str = "none"
    scan_layers: bool = True
    # positions
    rope_layout: str = "half"  # half (GPT-NeoX/Llama) or interleaved (GPT-J)
    rope_fraction: float = 1.0  # partial rotary: fraction of head_dim rotated
    xpos_scale_base: float = 512.0
    shaw_max_distance: int = 16  # Shaw: relative distances clipped to [-k, k]
    t5_num_buckets: int = 32
    t5_max_distance: int = 128
    position_base: int = 10  # base_n: digit base
    # attention
    attention_kind: str = "softmax"  # softmax or linear (kernel feature map)
    linear_feature_map: str = "elu1"
    attention_pattern: str = "dense"  # dense, sliding_window, block_sparse
    window: int = 0  # sliding_window / block_sparse local window (tokens)
    sparse_stride: int = 0  # block_sparse: every stride-th key is visible to all later queries
    global_tokens: int = 0  # block_sparse: the first tokens see and are seen by everyone
    qk_norm: bool = False
    # normalisation, residuals, embeddings, output
    norm_bias: bool = True  # layernorm only
    scale_embeddings: bool = False  # multiply token embeddings by sqrt(d_model)
    logit_soft_cap: float = 0.0  # 0: off; else cap * tanh(logits / cap)
    init: str = "scaled"  # scaled (GPT-2 residual scaling), normal, small (Nguyen & Salazar 2019)
    # layer types and architectures
    layer_pattern: str = "A"  # repeated over the layers: A attention, M selective SSM (hybrid stacks)
    ssm_state: int = 16
    ssm_expand: int = 2
    ssm_conv: int = 4
    n_encoder_layers: int = 0  # encoder_decoder: 0 means n_layers
    pooling: str = "mean"  # encoder sentence embeddings: mean or first token

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
        self._check_catalog()

    def _check_catalog(self) -> None:
        _check_choice(self.rope_layout, ROPE_LAYOUTS, "model.rope_layout")
        _check(0 < self.rope_fraction <= 1, "model.rope_fraction", f"must be in (0, 1], got {self.rope_fraction}")
        _check_positive(self.xpos_scale_base, "model.xpos_scale_base")
        _check_positive(self.shaw_max_distance, "model.shaw_max_distance")
        _check(self.t5_num_buckets >= 4 and self.t5_num_buckets % 2 == 0, "model.t5_num_buckets",
               f"must be an even number >= 4, got {self.t5_num_buckets}")
        _check(self.t5_max_distance > self.t5_num_buckets // 2, "model.t5_max_distance",
               f"must exceed t5_num_buckets / 2 = {self.t5_num_buckets // 2}, got {self.t5_max_distance}")
        _check(self.position_base >= 2, "model.position_base", f"must be >= 2, got {self.position_base}")
        _check_choice(self.attention_kind, ATTENTION_KINDS, "model.attention_kind")
        _check_choice(self.linear_feature_map, LINEAR_FEATURE_MAPS, "model.linear_feature_map")
        _check_choice(self.attention_pattern, ATTENTION_PATTERNS, "model.attention_pattern")
        _check(self.window >= 0 and self.sparse_stride >= 0 and self.global_tokens >= 0, "model.window",
               "window, sparse_stride and global_tokens must be >= 0")
        if self.attention_pattern == "sliding_window":
            _check(self.window > 0, "model.window", "attention_pattern=sliding_window needs model.window > 0")
        if self.attention_pattern == "block_sparse":
            _check(self.window > 0 and self.sparse_stride > 0, "model.sparse_stride",
                   "attention_pattern=block_sparse needs model.window > 0 and model.sparse_stride > 0")
        _check(self.logit_soft_cap >= 0, "model.logit_soft_cap", "must be >= 0 (0 disables it)")
        _check_choice(self.init, INITS, "model.init")
        _check_choice(self.pooling, POOLINGS, "model.pooling")
        _check(bool(self.layer_pattern) and all(c in LAYER_TYPES for c in self.layer_pattern),
               "model.layer_pattern", f"must be a string of {'/'.join(LAYER_TYPES)}, got {self.layer_pattern!r}")
        _check(self.n_layers % len(self.layer_pattern) == 0, "model.layer_pattern",
               f"its length {len(self.layer_pattern)} must divide model.n_layers={self.n_layers}")
        for name in ("ssm_state", "ssm_expand", "ssm_conv"):
            _check_positive(getattr(self, name), f"model.{name}")
        _check(self.n_encoder_layers >= 0, "model.n_encoder_layers", "must be >= 0 (0: n_layers)")
        if "M" in self.layer_pattern:
            _check(self.arch == "decoder", "model.layer_pattern",
                   f"selective SSM layers (M) are causal; model.arch={self.arch} needs attention-only layers")
        self._check_combinations()

    def _check_combinations(self) -> None:
        """Settings that cannot work together; the message names both."""
        linear = self.attention_kind == "linear"
        if linear:
            _check(self.position in ("none", "sinusoidal", "learned", "base_n"), "model.position",
                   f"position={self.position} acts inside softmax attention; attention_kind=linear takes "
                   "none or an absolute scheme (sinusoidal, learned, base_n)")
            _check(self.attention_pattern == "dense", "model.attention_pattern",
                   f"attention_pattern={self.attention_pattern} is a softmax mask; attention_kind=linear is dense")
            _check(self.arch in ("decoder", "encoder"), "model.arch",
                   f"arch={self.arch} needs masks that attention_kind=linear does not support")
        if self.attention_impl in ("xla", "cudnn", "splash"):
            _check(self.position != "shaw", "model.attention_impl",
                   f"attention_impl={self.attention_impl} cannot add Shaw value terms (position=shaw); "
                   "use plain or auto")
        if self.attention_impl == "splash":
            _check(self.position not in ("alibi", "t5"), "model.attention_impl",
                   f"attention_impl=splash cannot add a logit bias (position={self.position}); use xla or plain")
        if self.arch == "prefix_lm" and self.attention_pattern != "dense":
            _check(False, "model.attention_pattern",
                   f"attention_pattern={self.attention_pattern} is not combined with arch=prefix_lm's prefix mask; use dense")
        if self.arch in ("encoder", "encoder_decoder") and self.attention_pattern != "dense":
            _check(False, "model.attention_pattern",
                   f"attention_pattern={self.attention_pattern} is causal; arch={self.arch} needs a dense encoder")
        if self.position in ("rope", "xpos"):
            _check(self.resolved_head_dim % 2 == 0, "model.head_dim", f"position={self.position} needs an even head dimension")

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
        return self.ffn in ("swiglu", "geglu", "glu", "reglu")

    @property
    def resolved_encoder_layers(self) -> int:
        return self.n_encoder_layers or self.n_layers

    @property
    def is_causal(self) -> bool:
        return self.arch in ("decoder", "prefix_lm")


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
    special_tokens: tuple = ()  # extra special tokens after <|eos|> <|pad|> <|bos|>, e.g. ("<|mask|>",)
    num_sentinels: int = 0  # span-corruption sentinels <|sentinel_0|>... after special_tokens
    normalization: str = "none"  # unicode normalisation before tokenizing: none, nfc, nfkc
    document_mask: bool = False  # packed documents do not attend to each other
    mlm_rate: float = 0.15  # encoder: fraction of tokens selected for masked-LM
    noise_density: float = 0.15  # encoder_decoder: fraction of tokens in corrupted spans
    mean_span_length: float = 3.0  # encoder_decoder: mean corrupted span length
    prefix_fraction: float = 0.0  # prefix_lm: 0 draws the prefix length uniformly per example, else fixed

    def __post_init__(self):
        _check(bool(self.corpus.strip()), "data.corpus", "must name a corpus (stdlib, a path, a glob)")
        if self.tokenizer.startswith("file:"):
            _check(bool(self.tokenizer[5:].strip()), "data.tokenizer", "file: needs a path, e.g. file:tok/tokenizer.json")
        else:
            _check_choice(self.tokenizer, TOKENIZERS, "data.tokenizer")
        _check(all(isinstance(t, str) and t for t in self.special_tokens), "data.special_tokens",
               "must be a list of non-empty strings")
        _check(len(set(self.special_tokens)) == len(self.special_tokens), "data.special_tokens",
               "must not repeat a token")
        _check(self.num_sentinels >= 0, "data.num_sentinels", f"must be >= 0, got {self.num_sentinels}")
        _check_choice(self.normalization, NORMALIZATIONS, "data.normalization")
        _check_positive(self.seq_len, "data.seq_len")
        _check_positive(self.batch_size, "data.batch_size")
        _check_positive(self.tokenizer_train_bytes, "data.tokenizer_train_bytes")
        _check(0 < self.valid_fraction < 1, "data.valid_fraction", f"must be in (0, 1), got {self.valid_fraction}")
        _check(self.max_corpus_bytes >= 0, "data.max_corpus_bytes", "must be >= 0")
        _check(0 < self.mlm_rate < 1, "data.mlm_rate", f"must be in (0, 1), got {self.mlm_rate}")
        _check(0 < self.noise_density < 1, "data.noise_density", f"must be in (0, 1), got {self.noise_density}")
        _check(self.mean_span_length >= 1, "data.mean_span_length", f"must be >= 1, got {self.mean_span_length}")
        _check(0 <= self.prefix_fraction < 1, "data.prefix_fraction", f"must be in [0, 1), got {self.prefix_fraction}")


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
        _check(0 <= self.b1 < 1, "optim.b1", f"must be in [0, 1), got {self.b1}")
        _check(0 <= self.b2 < 1, "optim.b2", f"must be in [0, 1), got {self.b2}")
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
        self._check_model_data()
        if self.data.tokenizer == "bytes":
            _check(
                self.model.vocab_size >= 256 + 3,
                "model.vocab_size",
                f"the bytes tokenizer needs vocab_size >= 259, got {self.model.vocab_size}",
            )
        elif not self.data.tokenizer.startswith("file:"):  # a file's size is checked when it is loaded
            _check(
                self.model.vocab_size >= 256 + 3,
                "model.vocab_size",
                f"the {self.data.tokenizer} tokenizer needs vocab_size >= 259 (256 bytes + specials), "
                f"got {self.model.vocab_size}",
            )
        _check(
            self.data.batch_size % self.optim.grad_accum_steps == 0,
            "optim.grad_accum_steps",
            f"grad_accum_steps={self.optim.grad_accum_steps} does not divide data.batch_size={self.data.batch_size}",
        )

    def _check_model_data(self) -> None:
        model, data = self.model, self.data
        if model.attention_pattern != "dense":
            _check(model.window < data.seq_len, "model.window",
                   f"model.window={model.window} must be smaller than data.seq_len={data.seq_len} "
                   f"(attention_pattern={model.attention_pattern}; use dense for full attention)")
        if model.arch == "encoder":
            _check("<|mask|>" in data.special_tokens, "data.special_tokens",
                   "model.arch=encoder (masked LM) needs a <|mask|> token: add it to data.special_tokens")
        if model.arch == "encoder_decoder":
            _check(data.num_sentinels > 0, "data.num_sentinels",
                   "model.arch=encoder_decoder (span corruption) needs sentinel tokens: set data.num_sentinels")
        if model.arch == "prefix_lm":
            _check(data.seq_len >= 2, "data.seq_len", "model.arch=prefix_lm needs data.seq_len >= 2 (prefix + suffix)")
        if data.document_mask:
            _check(model.arch != "encoder_decoder", "data.document_mask",
                   "model.arch=encoder_decoder builds its own sequences by span corruption; data.document_mask "
                   "does not apply")
            _check(model.attention_kind == "softmax" or model.arch == "decoder", "data.document_mask",
                   f"bidirectional linear attention (model.attention_kind=linear, arch={model.arch}) cannot keep "
                   "packed documents apart")

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
            _check(_DOTTED_KEY.fullmatch(key) is not None, "--set", f"{key!r} is not a dotted config key")
            field_type = _field_type(type(self), key)
            _set_dotted(tree, key, coerce(raw.strip(), field_type, key), type(self))
        return Config.from_dict(tree)


# --- helpers ---------------------------------------------------------------------------------


def leaf_keys(config=None, prefix: str = "") -> list[str]:
    """Every dotted key a config accepts (`model.d_model`, ...), in declaration order."""
    config = Config() if config is None else config
    keys = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            keys += leaf_keys(value, f"{prefix}{field.name}.")
        else:
            keys.append(prefix + field.name)
    return keys


_DOTTED_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


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
