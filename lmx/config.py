"""One typed, validated configuration tree.

`Config` gathers frozen dataclasses (`ModelConfig`, `DataConfig`, `OptimConfig`, `TrainConfig`,
`MeshConfig`, `EvalConfig`). Invalid values fail at construction with a `ConfigError` naming the
field. Config files are Python files defining `config` (a `Config`) or `get_config()`; command-line
overrides `dotted.key=value` are coerced to the field's declared type. Key names are
stable: sweeps address them with `--set`. Each field's docstring (the string on the line after it)
is its documentation: `python -m lmx.config_docs` renders docs/config.md from them.
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

from lmx import registry
from lmx.errors import ConfigError

# Settings without an implementation registry: pure policies and names of the config itself.
NONFINITE_POLICIES = ("halt", "skip")
MESH_AXES = ("data", "fsdp", "tensor", "expert")


def _check(condition: bool, field: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{field}: {message}")


def _check_choice(value: str, choices: tuple[str, ...], field: str) -> None:
    _check(value in choices, field, f"unknown value {value!r}; choose one of {', '.join(choices)}")


def _check_positive(value: float, field: str) -> None:
    _check(value > 0 and math.isfinite(value), field, f"must be positive and finite, got {value}")


# --- model sub-configs: each variant family's settings, taken whole by the module that implements it


@dataclasses.dataclass(frozen=True)
class AttentionConfig:
    """`model.attention`: how tokens attend (lmx.nn.attention, masks, kernels, linear attention)."""

    kind: str = "softmax"
    """`linear` replaces the softmax by a kernel feature map (Katharopoulos et al. 2020; decoder or encoder,
    dense pattern, model.position.kind `none` or an absolute scheme); see
    [ssm-and-linear-attention.md](ssm-and-linear-attention.md)"""
    kernel: str = "auto"
    """softmax attention kernel (lmx.nn.attention_kernels): `plain` (einsum reference), `xla`, `cudnn` (GPU,
    16-bit compute), `splash` (TPU; static mask, no bias) or `auto`: splash on TPU when the mask is static and
    there is no bias, cuDNN on GPU with 16-bit compute, else xla; `model.position.kind=shaw` needs `plain`
    (which auto picks)"""
    pattern: str = "dense"
    """causal mask pattern: `sliding_window` needs model.attention.window, `block_sparse` needs
    model.attention.window and model.attention.stride; patterns other than `dense` need arch=decoder"""
    window: int = 0
    """sliding_window / block_sparse: local window in tokens; must be < data.seq_len"""
    stride: int = 0
    """block_sparse: every stride-th key (k % stride == stride - 1) is visible to all later queries"""
    global_tokens: int = 0
    """block_sparse: the first tokens see and are seen by every (causally allowed) position"""
    qk_norm: bool = False
    """RMSNorm of queries and keys over head_dim before positions and scores"""
    feature_map: str = "elu1"
    """linear attention feature map: `elu1` is elu(x) + 1"""

    def __post_init__(self):
        registry.ATTENTION_KINDS.check(self.kind, "model.attention.kind")
        registry.ATTENTION_KERNELS.check(self.kernel, "model.attention.kernel")
        registry.ATTENTION_PATTERNS.check(self.pattern, "model.attention.pattern")
        registry.LINEAR_FEATURE_MAPS.check(self.feature_map, "model.attention.feature_map")
        for name in ("window", "stride", "global_tokens"):
            _check(getattr(self, name) >= 0, f"model.attention.{name}", f"must be >= 0, got {getattr(self, name)}")
        if self.pattern == "sliding_window":
            _check(self.window > 0, "model.attention.window", "pattern=sliding_window needs model.attention.window > 0")
        if self.pattern == "block_sparse":
            _check(self.window > 0 and self.stride > 0, "model.attention.stride",
                   "pattern=block_sparse needs model.attention.window > 0 and model.attention.stride > 0")
        if self.kind == "linear":
            _check(self.pattern == "dense", "model.attention.pattern",
                   f"pattern={self.pattern} is a softmax mask; model.attention.kind=linear is dense")


@dataclasses.dataclass(frozen=True)
class RopeConfig:
    """`model.position.rope`: rotary embeddings (Su et al. 2021); xpos reads them too."""

    theta: float = 10000.0
    """RoPE base: pair i of d_rot rotated features turns by p * theta^(-2i/d_rot) at position p"""
    layout: str = "half"
    """RoPE/xPos pairing: `half` (pair i = (x_i, x_{i+d/2}); GPT-NeoX, Llama) or `interleaved`
    (pair i = (x_2i, x_2i+1); GPT-J)"""
    fraction: float = 1.0
    """partial rotary: fraction of head_dim rotated (in (0, 1]); the rest passes through"""

    def __post_init__(self):
        _check_positive(self.theta, "model.position.rope.theta")
        registry.ROPE_LAYOUTS.check(self.layout, "model.position.rope.layout")
        _check(0 < self.fraction <= 1, "model.position.rope.fraction", f"must be in (0, 1], got {self.fraction}")


@dataclasses.dataclass(frozen=True)
class XposConfig:
    """`model.position.xpos`: xPos decay on top of RoPE (Sun et al. 2022)."""

    scale_base: float = 512.0
    """xPos scale base gamma (q scaled by zeta^(p/gamma), k by zeta^(-p/gamma))"""

    def __post_init__(self):
        _check_positive(self.scale_base, "model.position.xpos.scale_base")


@dataclasses.dataclass(frozen=True)
class T5BiasConfig:
    """`model.position.t5`: T5 relative-position buckets (Raffel et al. 2020)."""

    num_buckets: int = 32
    """buckets (even, >= 4; halved per direction in bidirectional stacks)"""
    max_distance: int = 128
    """distance where the log-spaced buckets end (must exceed num_buckets / 2)"""

    def __post_init__(self):
        _check(self.num_buckets >= 4 and self.num_buckets % 2 == 0, "model.position.t5.num_buckets",
               f"must be an even number >= 4, got {self.num_buckets}")
        _check(self.max_distance > self.num_buckets // 2, "model.position.t5.max_distance",
               f"must exceed num_buckets / 2 = {self.num_buckets // 2}, got {self.max_distance}")


@dataclasses.dataclass(frozen=True)
class ShawConfig:
    """`model.position.shaw`: relative keys/values of Shaw et al. 2018, distances clipped to [-k, k]."""

    max_distance: int = 16
    """relative distances clipped to [-k, k] (2k + 1 learned key and value vectors)"""

    def __post_init__(self):
        _check_positive(self.max_distance, "model.position.shaw.max_distance")


@dataclasses.dataclass(frozen=True)
class BaseNConfig:
    """`model.position.base_n`: positions written as digits in a base, one embedding per digit."""

    base: int = 10
    """digit base B (>= 2); one learned [B, d_model] table per digit place"""

    def __post_init__(self):
        _check(self.base >= 2, "model.position.base_n.base", f"must be >= 2, got {self.base}")


@dataclasses.dataclass(frozen=True)
class PositionConfig:
    """`model.position`: the scheme (`kind`) and, grouped by scheme, the settings each one reads."""

    kind: str = "rope"
    """position scheme: `rope` and `xpos` rotate q and k, `alibi` and `t5` add a logit bias, `shaw` adds
    relative key/value vectors, `sinusoidal`, `learned` and `base_n` are added to the embeddings, `none` is
    NoPE; a scheme's settings are in the sub-section of its name (xpos also reads rope); see
    [catalog.md](catalog.md#position-schemes)"""
    rope: RopeConfig = dataclasses.field(default_factory=RopeConfig)
    xpos: XposConfig = dataclasses.field(default_factory=XposConfig)
    t5: T5BiasConfig = dataclasses.field(default_factory=T5BiasConfig)
    shaw: ShawConfig = dataclasses.field(default_factory=ShawConfig)
    base_n: BaseNConfig = dataclasses.field(default_factory=BaseNConfig)

    def __post_init__(self):
        registry.POSITIONS.check(self.kind, "model.position.kind")

    @property
    def rotary(self) -> bool:
        return self.kind in ("rope", "xpos")


@dataclasses.dataclass(frozen=True)
class FFNConfig:
    """`model.ffn`: the feed-forward activation and its width rule (model.d_ff = 0 derives it)."""

    activation: str = "swiglu"
    """FFN activation: the gated ones (`swiglu`, `geglu`, `reglu`, `glu`) have three matrices, the plain ones
    two; `gelu` is the erf form, `gelu_tanh` its tanh approximation"""
    ratio: float = 8 / 3
    """FFN width ratio when model.d_ff is 0 (8/3 for gated FFNs, 4 for plain)"""
    multiple_of: int = 32
    """rounding multiple of the derived d_ff"""

    def __post_init__(self):
        registry.FFN_ACTIVATIONS.check(self.activation, "model.ffn.activation")
        _check_positive(self.ratio, "model.ffn.ratio")
        _check_positive(self.multiple_of, "model.ffn.multiple_of")


@dataclasses.dataclass(frozen=True)
class NormConfig:
    """`model.norm`: the normalisation and where it sits around each sublayer."""

    kind: str = "rmsnorm"
    """normalisation layer (computed in float32)"""
    eps: float = 1e-5
    """normalisation epsilon"""
    placement: str = "pre"
    """residual placement: `pre` (x + f(norm(x))), `post` (norm(x + f(x))), `deepnorm`
    (norm(alpha x + f(x)), beta-scaled init), `rezero` (x + g f(x), g = 0 at init, no norms)"""
    bias: bool = True
    """layernorm only: learn an additive bias"""

    def __post_init__(self):
        registry.NORMS.check(self.kind, "model.norm.kind")
        registry.NORM_PLACEMENTS.check(self.placement, "model.norm.placement")
        _check_positive(self.eps, "model.norm.eps")


@dataclasses.dataclass(frozen=True)
class SSMConfig:
    """`model.ssm`: selective state-space layers (M in model.layer_pattern; Gu & Dao 2023)."""

    state: int = 16
    """state size N per channel"""
    expand: int = 2
    """inner width E = expand * d_model"""
    conv: int = 4
    """causal depthwise convolution width"""

    def __post_init__(self):
        for name in ("state", "expand", "conv"):
            _check_positive(getattr(self, name), f"model.ssm.{name}")


@dataclasses.dataclass(frozen=True)
class MoEConfig:
    """`model.moe`: mixture-of-experts FFN layers. Reserved: num_experts = 0 (dense FFN) only."""

    num_experts: int = 0
    """experts per FFN layer; reserved: only 0 (a dense FFN) is accepted in this version"""

    def __post_init__(self):
        _check(self.num_experts == 0, "model.moe.num_experts",
               "mixture-of-experts layers are not available in this version of lmx; leave it 0")


# old flat keys (before the nested model config) -> their new spelling; a config naming one is refused
RENAMED_KEYS = {
    "model.position": "model.position.kind",
    "model.rope_theta": "model.position.rope.theta",
    "model.rope_layout": "model.position.rope.layout",
    "model.rope_fraction": "model.position.rope.fraction",
    "model.xpos_scale_base": "model.position.xpos.scale_base",
    "model.shaw_max_distance": "model.position.shaw.max_distance",
    "model.t5_num_buckets": "model.position.t5.num_buckets",
    "model.t5_max_distance": "model.position.t5.max_distance",
    "model.position_base": "model.position.base_n.base",
    "model.attention_kind": "model.attention.kind",
    "model.attention_impl": "model.attention.kernel",
    "model.attention_pattern": "model.attention.pattern",
    "model.window": "model.attention.window",
    "model.sparse_stride": "model.attention.stride",
    "model.global_tokens": "model.attention.global_tokens",
    "model.qk_norm": "model.attention.qk_norm",
    "model.linear_feature_map": "model.attention.feature_map",
    "model.ffn": "model.ffn.activation",
    "model.ffn_ratio": "model.ffn.ratio",
    "model.ffn_multiple_of": "model.ffn.multiple_of",
    "model.norm": "model.norm.kind",
    "model.norm_eps": "model.norm.eps",
    "model.norm_position": "model.norm.placement",
    "model.norm_bias": "model.norm.bias",
    "model.ssm_state": "model.ssm.state",
    "model.ssm_expand": "model.ssm.expand",
    "model.ssm_conv": "model.ssm.conv",
}


_SUB_CONFIGS = {"attention": AttentionConfig, "position": PositionConfig, "ffn": FFNConfig, "norm": NormConfig,
                "ssm": SSMConfig, "moe": MoEConfig}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """`model`: the shape sweeps address (flat) and one sub-config per family of variants."""

    arch: str = "decoder"
    """architecture (a record in lmx.nn.architectures): `decoder` (causal LM), `encoder` (bidirectional,
    masked LM; needs `<|mask|>` in data.special_tokens), `encoder_decoder` (T5-style, span corruption; needs
    data.num_sentinels > 0), `prefix_lm` (bidirectional prefix, causal suffix); see
    [catalog.md](catalog.md#architectures)"""
    d_model: int = 256
    """residual stream width"""
    n_layers: int = 4
    """number of blocks (stacked on a `layers` axis and scanned); the decoder depth of encoder_decoder"""
    n_heads: int = 8
    """query heads"""
    n_kv_heads: int = 4
    """key/value heads (GQA; = n_heads is MHA, 1 is MQA); must divide n_heads"""
    head_dim: int = 0
    """per-head width; 0 means d_model / n_heads"""
    d_ff: int = 0
    """FFN hidden width; 0 means model.ffn.ratio * d_model rounded up to model.ffn.multiple_of"""
    vocab_size: int = 4096
    """embedding rows; the tokenizer is trained to at most this size"""
    max_seq_len: int = 256
    """longest sequence the model accepts; data.seq_len must not exceed it"""
    layer_pattern: str = "A"
    """layer types repeated over the stack: `A` attention, `M` selective SSM (Mamba-style; sizes in
    model.ssm), e.g. `MA`; its length must divide n_layers; `M` needs arch=decoder"""
    n_encoder_layers: int = 0
    """encoder_decoder: encoder layers (0: n_layers); n_layers is the decoder depth"""
    tie_embeddings: bool = True
    """output projection shares the input embedding"""
    scale_embeddings: bool = False
    """multiply token embeddings by sqrt(d_model)"""
    logit_soft_cap: float = 0.0
    """0: off; else logits = cap * tanh(logits / cap)"""
    init: str = "scaled"
    """initialisation: `scaled` (N(0, init_std^2), residual outputs / sqrt(2 n_layers); GPT-2), `normal`
    (all N(0, init_std^2)), `small` (std sqrt(2 / (5 d_model)), Nguyen & Salazar 2019)"""
    init_std: float = 0.02
    """standard deviation of the normal initialiser"""
    param_dtype: str = "float32"
    """parameter storage dtype"""
    compute_dtype: str = "float32"
    """matmul operand dtype, summed in float32 (norms, softmax, logits, loss stay float32)"""
    remat: str = "none"
    """rematerialisation of each block"""
    scan_layers: bool = True
    """run blocks with lax.scan (true) or an unrolled loop (false)"""
    pooling: str = "mean"
    """encoder sentence embeddings: `mean` over real tokens or the `first` token"""
    attention: AttentionConfig = dataclasses.field(default_factory=AttentionConfig)
    position: PositionConfig = dataclasses.field(default_factory=PositionConfig)
    rope_scaling: dict | None = None
    """reserved for RoPE scaling (PI, NTK, YaRN, ...; Hugging Face rope_scaling dictionaries); must be unset in
    this version"""
    ffn: FFNConfig = dataclasses.field(default_factory=FFNConfig)
    norm: NormConfig = dataclasses.field(default_factory=NormConfig)
    ssm: SSMConfig = dataclasses.field(default_factory=SSMConfig)
    moe: MoEConfig = dataclasses.field(default_factory=MoEConfig)

    def __post_init__(self):
        for name, section in _SUB_CONFIGS.items():
            if not isinstance(getattr(self, name), section):
                _refuse_renamed(f"model.{name}", section_given=False)
                raise ConfigError(f"model.{name}: expected a {section.__name__}, got {type(getattr(self, name)).__name__}")
        registry.ARCHITECTURES.check(self.arch, "model.arch")
        for name in ("d_model", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "max_seq_len"):
            _check_positive(getattr(self, name), f"model.{name}")
        _check(self.head_dim >= 0, "model.head_dim", f"must be >= 0, got {self.head_dim}")
        _check(self.d_ff >= 0, "model.d_ff", f"must be >= 0, got {self.d_ff}")
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
        registry.DTYPES.check(self.param_dtype, "model.param_dtype")
        registry.DTYPES.check(self.compute_dtype, "model.compute_dtype")
        registry.REMAT.check(self.remat, "model.remat")
        registry.INITS.check(self.init, "model.init")
        registry.POOLINGS.check(self.pooling, "model.pooling")
        _check_positive(self.init_std, "model.init_std")
        _check(self.logit_soft_cap >= 0, "model.logit_soft_cap", "must be >= 0 (0 disables it)")
        _check(
            self.rope_scaling is None,
            "model.rope_scaling",
            "RoPE scaling methods are not available in this version of lmx; leave it unset",
        )
        _check(bool(self.layer_pattern) and all(c in registry.LAYER_TYPES for c in self.layer_pattern),
               "model.layer_pattern",
               f"must be a string of {'/'.join(registry.LAYER_TYPES.names())}, got {self.layer_pattern!r}")
        _check(self.n_layers % len(self.layer_pattern) == 0, "model.layer_pattern",
               f"its length {len(self.layer_pattern)} must divide model.n_layers={self.n_layers}")
        _check(self.n_encoder_layers >= 0, "model.n_encoder_layers", "must be >= 0 (0: n_layers)")
        self._check_combinations()
        registry.ARCHITECTURES[self.arch].check_model(self)

    def _check_combinations(self) -> None:
        """Settings of different sub-configs that cannot work together; the message names both."""
        attention, position = self.attention, self.position
        if attention.kind == "linear":
            _check(position.kind in ("none", "sinusoidal", "learned", "base_n"), "model.position.kind",
                   f"position.kind={position.kind} acts inside softmax attention; attention.kind=linear takes "
                   "none or an absolute scheme (sinusoidal, learned, base_n)")
        if attention.kernel in ("xla", "cudnn", "splash"):
            _check(position.kind != "shaw", "model.attention.kernel",
                   f"attention.kernel={attention.kernel} cannot add Shaw value terms (position.kind=shaw); "
                   "use plain or auto")
        if attention.kernel == "splash":
            _check(position.kind not in ("alibi", "t5"), "model.attention.kernel",
                   f"attention.kernel=splash cannot add a logit bias (position.kind={position.kind}); use xla or plain")
        if position.rotary:
            derived = "" if self.head_dim else f" (d_model {self.d_model} / n_heads {self.n_heads})"
            _check(self.resolved_head_dim % 2 == 0, "model.head_dim",
                   f"position.kind={position.kind} needs an even head dimension, got {self.resolved_head_dim}{derived}")

    def replace(self, **overrides: Any) -> ModelConfig:
        """Copy with overrides relative to `model`, dotted or with `__` for the dots:
        cfg.replace(n_layers=2, position__kind="alibi") == cfg.replace(**{"n_layers": 2, "position.kind": "alibi"})."""
        tree = json.loads(json.dumps(dataclasses.asdict(self)))
        for key, value in overrides.items():
            _set_dotted(tree, key.replace("__", "."), value, type(self), prefix="model.")
        return _build(ModelConfig, tree, "model.")

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim or self.d_model // self.n_heads

    @property
    def resolved_d_ff(self) -> int:
        if self.d_ff:
            return self.d_ff
        raw = self.ffn.ratio * self.d_model
        return int(self.ffn.multiple_of * math.ceil(raw / self.ffn.multiple_of))

    @property
    def resolved_encoder_layers(self) -> int:
        return self.n_encoder_layers or self.n_layers

    @property
    def architecture(self):
        """The record of `arch` (lmx.nn.architectures.Architecture): model class, objective, decoding, ..."""
        return registry.ARCHITECTURES[self.arch]

    @property
    def is_causal(self) -> bool:
        """The (only) stack attends causally: decoder, prefix-LM (an encoder-decoder has one stack of each)."""
        return self.architecture.causal and not self.architecture.has_cross_attention


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """`data`: the corpus, the tokenizer, packed windows and the objective's settings (lmx.data)."""

    corpus: str = "stdlib"
    """`stdlib` (embedded default), a file, a directory, a glob, or `hf:NAME[:SPLIT]`"""
    tokenizer: str = "byte_bpe"
    """`file:PATH` loads an existing tokenizer file or directory (`lmx tokenizer train --out`); otherwise the tokenizer kind (`byte_bpe`: byte-level BPE
    trained on the corpus, `bytes`: raw UTF-8 bytes; see [tokenizers.md](tokenizers.md))"""
    tokenizer_train_bytes: int = 8_000_000
    """bytes of training text the BPE trainer reads"""
    seq_len: int = 256
    """tokens per training sequence"""
    batch_size: int = 16
    """global batch size in sequences (split across processes and data-parallel devices)"""
    valid_fraction: float = 0.02
    """fraction of documents held out for validation (by a hash of the path)"""
    shuffle_seed: int = 0
    """seed of the data order"""
    cache_dir: str = ""
    """cache of tokenizers and token arrays; empty means $LMX_CACHE or ~/.cache/lmx"""
    max_corpus_bytes: int = 0
    """read documents only until this many bytes (0: all)"""
    special_tokens: tuple = ()
    """extra special tokens after `<|eos|>` `<|pad|>` `<|bos|>`, e.g. `["<|mask|>"]`"""
    num_sentinels: int = 0
    """span-corruption sentinel tokens `<|sentinel_0|>`, ... (after special_tokens)"""
    normalization: str = "none"
    """unicode normalisation before tokenizing"""
    document_mask: bool = False
    """packed documents do not attend to each other (segment-id mask; decoder, prefix_lm, encoder); for the
    decoder, positions also restart per document; softmax attention only"""
    mlm_rate: float = 0.15
    """encoder: fraction of tokens selected for masked LM (80% `<|mask|>`, 10% random, 10% kept)"""
    noise_density: float = 0.15
    """encoder_decoder: fraction of tokens inside corrupted spans"""
    mean_span_length: float = 3.0
    """encoder_decoder: mean length of a corrupted span (>= 1)"""
    prefix_fraction: float = 0.0
    """prefix_lm: 0 draws the prefix length uniformly per example, else this fixed fraction of the real
    tokens"""

    def __post_init__(self):
        _check(bool(self.corpus.strip()), "data.corpus", "must name a corpus (stdlib, a path, a glob)")
        if self.tokenizer.startswith("file:"):
            _check(bool(self.tokenizer[5:].strip()), "data.tokenizer", "file: needs a path, e.g. file:tok/tokenizer.json")
        else:
            registry.TOKENIZERS.check(self.tokenizer, "data.tokenizer")
        _check(all(isinstance(t, str) and t for t in self.special_tokens), "data.special_tokens",
               "must be a list of non-empty strings")
        _check(len(set(self.special_tokens)) == len(self.special_tokens), "data.special_tokens",
               "must not repeat a token")
        _check(self.num_sentinels >= 0, "data.num_sentinels", f"must be >= 0, got {self.num_sentinels}")
        registry.NORMALIZATIONS.check(self.normalization, "data.normalization")
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
    """`optim`: the optimizer and its learning-rate schedule (lmx.train)."""

    name: str = "adamw"
    """optimizer"""
    lr: float = 3e-3
    """peak learning rate"""
    min_lr_ratio: float = 0.1
    """final learning rate as a fraction of lr"""
    warmup_steps: int = 20
    """linear warmup steps from 0"""
    schedule: str = "cosine"
    """learning-rate schedule after warmup (`wsd`: warmup-stable-decay)"""
    decay_fraction: float = 0.2
    """wsd: fraction of steps in the final decay"""
    weight_decay: float = 0.1
    """decoupled weight decay on matrices (not on norm scales)"""
    b1: float = 0.9
    """Adam beta1"""
    b2: float = 0.95
    """Adam beta2"""
    eps: float = 1e-8
    """Adam epsilon"""
    clip_norm: float = 1.0
    """global gradient-norm clipping threshold; 0 disables"""
    grad_accum_steps: int = 1
    """micro-batches per step (must divide data.batch_size)"""
    z_loss: float = 0.0
    """coefficient of the logit z-loss (0: off)"""

    def __post_init__(self):
        registry.OPTIMIZERS.check(self.name, "optim.name")
        registry.SCHEDULES.check(self.schedule, "optim.schedule")
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
    """`train`: the loop: steps, evaluation, checkpoints, logging, failure policies."""

    steps: int = 200
    """optimizer steps"""
    seed: int = 0
    """parameter-initialisation and step RNG seed"""
    eval_every: int = 100
    """steps between held-out evaluations (and at the end)"""
    eval_batches: int = 4
    """validation batches per evaluation (fixed across the run)"""
    checkpoint_every: int = 100
    """steps between checkpoints (and at the end)"""
    keep_checkpoints: int = 2
    """newest checkpoints kept"""
    async_checkpointing: bool = True
    """write checkpoints in the background"""
    log_every: int = 10
    """steps between metrics.jsonl rows"""
    nonfinite: str = "halt"
    """a non-finite loss or gradient: `halt` stops (the last good checkpoint stays), `skip` drops the update
    and counts it"""
    run_dir: str = ""
    """run directory; empty means runs/NAME-TIMESTAMP"""
    preemption_grace_seconds: float = 120.0
    """after SIGTERM/SIGINT: save at the next step boundary and exit 0; hard exit (143) if that takes longer
    than this"""

    def __post_init__(self):
        _check_positive(self.steps, "train.steps")
        for name in ("eval_every", "eval_batches", "checkpoint_every", "keep_checkpoints", "log_every"):
            _check_positive(getattr(self, name), f"train.{name}")
        _check_choice(self.nonfinite, NONFINITE_POLICIES, "train.nonfinite")
        _check_positive(self.preemption_grace_seconds, "train.preemption_grace_seconds")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """`mesh`: the device mesh and the sharding strategy; see [scaling-out.md](scaling-out.md)."""

    shape: dict = dataclasses.field(default_factory=lambda: {"data": -1})
    """device mesh, e.g. {"data": 2, "fsdp": 4} (axes: data, fsdp, tensor, expert); one axis may be -1 (the
    rest of the devices)"""
    strategy: str = "dp"
    """sharding rules table"""

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
        registry.STRATEGIES.check(self.strategy, "mesh.strategy")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """`eval`: what the end of training prints."""

    sample_prompts: tuple = ("def ", "class ", "import ")
    """prompts for the greedy samples printed after training"""
    sample_tokens: int = 48
    """tokens generated per sample"""

    def __post_init__(self):
        _check(all(isinstance(p, str) for p in self.sample_prompts), "eval.sample_prompts",
               "must be a list of strings")
        _check(self.sample_tokens >= 0, "eval.sample_tokens", "must be >= 0")


@dataclasses.dataclass(frozen=True)
class Config:
    """The whole tree: a name and one section per concern."""

    name: str = "default"
    """config name; names the default run directory"""
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
        if model.attention.pattern != "dense":
            _check(model.attention.window < data.seq_len, "model.attention.window",
                   f"model.attention.window={model.attention.window} must be smaller than data.seq_len={data.seq_len} "
                   f"(attention.pattern={model.attention.pattern}; use dense for full attention)")
        model.architecture.check_data(model, data)

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


def flat_config(config) -> dict:
    """`config` flattened: {dotted key: value} for every leaf key, in declaration order (what sweep
    files' `derive` reads, and what ensemble grouping compares)."""
    tree = config.to_dict()
    view = {}
    for key in leaf_keys(config):
        node = tree
        for part in key.split("."):
            node = node[part]
        view[key] = node
    return view


_DOTTED_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _field_type(cls, dotted: str):
    parts = dotted.split(".")
    current = cls
    _refuse_renamed(dotted, section_given=False)
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


def _refuse_renamed(full_key: str, section_given: bool) -> None:
    """A one-line error for a key of the flat model config that the nested config renamed (a key that
    is now a section, such as model.position, is refused only when it is given a plain value)."""
    new = RENAMED_KEYS.get(full_key)
    if new is not None and not section_given:
        raise ConfigError(f"{full_key}: renamed to {new} (the model config is nested; see docs/config.md)")


def _set_dotted(tree: dict, dotted: str, value: Any, cls, prefix: str = "") -> None:
    _refuse_renamed(prefix + dotted, section_given=isinstance(value, dict))
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
    if inner is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number, got {value}")
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
    for key, value in data.items():
        if key not in hints or dataclasses.is_dataclass(hints[key]):
            _refuse_renamed(f"{prefix}{key}", section_given=isinstance(value, (dict, cls)) or
                            dataclasses.is_dataclass(value))
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
