"""Analytic parameter and FLOP counts for a ModelConfig (every architecture and layer type).

FLOP convention (Kaplan et al. 2020, arXiv:2001.08361, Table 1; Chowdhery et al. 2022 PaLM,
arXiv:2204.02311, Appendix B): a matmul with a P-parameter weight costs 2P FLOPs per token forward
and 4P backward, so training costs 6 N_matmul per token, where N_matmul counts every weight matrix
applied per token: the attention/SSM and FFN projections of all layers plus the output projection
(counted whether or not it is tied to the input embedding). Embedding lookups, norms, activations,
softmax, RoPE and the SSM's elementwise scan are not counted. Softmax attention scores and the
weighted sum cost 2 * 2 * S_eff * H * d_h FLOPs per token per layer forward, where S_eff is the
number of keys a query sees on average: S/2 for a causal map (MaxText's convention since 2025;
PaLM's 12 L H d_h S counts the full map), S for a bidirectional one, about the window for sliding
windows, window + S/(2 stride) + global tokens for block-sparse (the strided columns below the diagonal). Linear attention costs
2 * 2 * H * d_h^2 per token per layer instead (the phi(k) v^T update and phi(q) S read).
For encoder_decoder the count assumes encoder and decoder sequences of the same length.
    training = 3 * forward.
"""

from __future__ import annotations

import math

from lmx.config import ModelConfig
from lmx.nn.absolute_positions import base_n_num_digits
from lmx.nn.mlp import FFN_ACTIVATIONS


def _norm_params(config: ModelConfig) -> int:
    if config.norm.placement == "rezero":
        return 0
    has_bias = config.norm.kind == "layernorm" and config.norm.bias
    return config.d_model * (2 if has_bias else 1)


def _attention_matmul(config: ModelConfig) -> int:
    d, h = config.d_model, config.resolved_head_dim
    return d * config.n_heads * h * 2 + d * config.n_kv_heads * h * 2  # q, out + k, v


def _attention_extra(config: ModelConfig, cross: bool = False) -> int:
    h = config.resolved_head_dim
    extra = 2 * h if config.attention.qk_norm else 0
    if config.position.kind == "shaw" and not cross:
        extra += 2 * (2 * config.position.shaw.max_distance + 1) * h
    return extra


def _ssm_dims(config: ModelConfig):
    inner = config.ssm.expand * config.d_model
    return inner, config.ssm.state, math.ceil(config.d_model / 16)


def _ssm_matmul(config: ModelConfig) -> int:
    e, n, r = _ssm_dims(config)
    return config.d_model * 2 * e + e * (r + 2 * n) + r * e + e * config.d_model


def _ssm_extra(config: ModelConfig) -> int:
    e, n, _ = _ssm_dims(config)
    return e * config.ssm.conv + e + e + e * n + e  # conv weight, conv bias, dt bias, A_log, D


def _ffn_params(config: ModelConfig) -> int:
    n_mats = 3 if FFN_ACTIVATIONS[config.ffn.activation].gated else 2
    return n_mats * config.d_model * config.resolved_d_ff


def _layer_params(config: ModelConfig, layer_type: str, cross: bool) -> int:
    if layer_type == "A":
        mixer = _attention_matmul(config) + _attention_extra(config)
    else:
        mixer = _ssm_matmul(config) + _ssm_extra(config)
    total = mixer + _ffn_params(config) + 2 * _norm_params(config)
    if cross:
        total += _attention_matmul(config) + _attention_extra(config, cross=True) + _norm_params(config)
    if config.norm.placement == "rezero":
        total += 1
    return total


def _stacks(config: ModelConfig) -> list[tuple[int, str, bool]]:
    """(layers, pattern, cross) of every stack of the model (the architecture's record)."""
    return config.architecture.stacks(config)


def _position_tables(config: ModelConfig) -> int:
    if config.position.kind == "learned":
        return config.max_seq_len * config.d_model
    if config.position.kind == "base_n":
        return base_n_num_digits(config.max_seq_len, config.position.base_n.base) * config.position.base_n.base * config.d_model
    return 0


def param_count(config: ModelConfig, include_embedding: bool = True) -> int:
    """Number of parameters of `build_model(config)`.

    With include_embedding=False the vocabulary-sized matrices (input embedding and, when untied, the
    output matrix) and absolute position tables are left out (Kaplan et al.'s non-embedding N).
    """
    total = 0
    for n_layers, pattern, cross in _stacks(config):
        per_group = sum(_layer_params(config, t, cross) for t in pattern)
        total += n_layers // len(pattern) * per_group
        total += _norm_params(config) if config.norm.placement == "pre" else 0  # final norm
    if config.position.kind == "t5":
        n_tables = len(_stacks(config))  # one shared table per stack
        total += n_tables * config.position.t5.num_buckets * config.n_heads
    if include_embedding:
        total += (1 if config.tie_embeddings else 2) * config.vocab_size * config.d_model
        total += _position_tables(config)
    return total


def matmul_params(config: ModelConfig) -> int:
    """Weights applied as matmuls per token: all layers' projections plus the output projection."""
    total = config.d_model * config.vocab_size
    for n_layers, pattern, cross in _stacks(config):
        for layer_type in pattern:
            per_layer = _attention_matmul(config) if layer_type == "A" else _ssm_matmul(config)
            per_layer += _ffn_params(config) + (_attention_matmul(config) if cross else 0)
            total += n_layers // len(pattern) * per_layer
    return total


def _keys_seen(config: ModelConfig, seq_len: int, causal: bool) -> float:
    if not causal:
        return float(seq_len)
    if config.attention.pattern == "sliding_window":
        return float(min(config.attention.window, seq_len))
    if config.attention.pattern == "block_sparse":
        return float(min(seq_len / 2, config.attention.window + seq_len / (2 * config.attention.stride) + config.attention.global_tokens))
    return seq_len / 2


def _attention_flops(config: ModelConfig, seq_len: int) -> float:
    h_dh = config.n_heads * config.resolved_head_dim
    flops = 0.0
    for n_layers, pattern, cross in _stacks(config):
        n_attention = n_layers // len(pattern) * pattern.count("A")
        causal = config.is_causal or cross  # the decoder of encoder_decoder is causal
        if config.attention.kind == "linear":
            per_layer = 4 * h_dh * config.resolved_head_dim
        else:
            per_layer = 4 * _keys_seen(config, seq_len, causal) * h_dh
        if cross:
            per_layer += 4 * seq_len * h_dh  # cross-attention sees every encoder position
        flops += n_attention * per_layer
    return flops


def flops_per_token(config: ModelConfig, seq_len: int) -> dict[str, int]:
    """Forward and training FLOPs per token at context length `seq_len` (convention: module docstring).

    Keys: matmul_params, forward_matmul (2 N), forward_attention, forward, training (3 x forward).
    """
    n = matmul_params(config)
    attention = int(round(_attention_flops(config, seq_len)))
    forward = 2 * n + attention
    return {
        "matmul_params": n,
        "forward_matmul": 2 * n,
        "forward_attention": attention,
        "forward": forward,
        "training": 3 * forward,
    }
