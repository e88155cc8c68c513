"""Analytic parameter and FLOP counts for a ModelConfig.

FLOP convention (Kaplan et al. 2020, arXiv:2001.08361, Table 1; Chowdhery et al. 2022 PaLM,
arXiv:2204.02311, Appendix B): a matmul with a P-parameter weight costs 2P FLOPs per token forward
and 4P backward, so training costs 6 N_matmul per token, where N_matmul counts every weight matrix
applied per token: the attention and FFN projections of all layers plus the output projection
(counted whether or not it is tied to the input embedding). The input embedding lookup, norms,
activations, softmax and RoPE are not counted. Attention scores q k^T and the weighted sum of values
cost 2 * 2 * S * H * d_h FLOPs per token per layer forward for a full (bidirectional) S x S map;
with a causal mask only half of the map is needed, so we count half (as MaxText has done since 2025;
PaLM's 6 N + 12 L H d_h S counts the full map):
    training  = 6 N_matmul + 6 n_layers * seq_len * n_heads * head_dim    (= 12 L H d_h S / 2)
    forward   = training / 3.
"""

from __future__ import annotations

from lmx.config import ModelConfig
from lmx.nn.mlp import FFN_ACTIVATIONS

# parameter vectors of size d_model per norm layer
_NORM_VECTORS = {"rmsnorm": 1, "layernorm": 2}


def _attention_params(config: ModelConfig) -> int:
    d, h = config.d_model, config.resolved_head_dim
    return d * config.n_heads * h * 2 + d * config.n_kv_heads * h * 2  # q, out + k, v


def _ffn_params(config: ModelConfig) -> int:
    n_mats = 3 if FFN_ACTIVATIONS[config.ffn].gated else 2
    return n_mats * config.d_model * config.resolved_d_ff


def _norm_params(config: ModelConfig) -> int:
    return _NORM_VECTORS[config.norm] * config.d_model


def param_count(config: ModelConfig, include_embedding: bool = True) -> int:
    """Number of parameters of `Transformer(config)`.

    With include_embedding=False the vocabulary-sized matrices (input embedding and, when untied,
    the output matrix) are left out; norms are kept.
    """
    per_layer = _attention_params(config) + _ffn_params(config) + 2 * _norm_params(config)
    total = config.n_layers * per_layer + _norm_params(config)
    if include_embedding:
        vocab_mats = 1 if config.tie_embeddings else 2
        total += vocab_mats * config.vocab_size * config.d_model
    return total


def matmul_params(config: ModelConfig) -> int:
    """Weights applied as matmuls per token: all layers' projections plus the output projection."""
    per_layer = _attention_params(config) + _ffn_params(config)
    return config.n_layers * per_layer + config.d_model * config.vocab_size


def flops_per_token(config: ModelConfig, seq_len: int) -> dict[str, int]:
    """Forward and training FLOPs per token at context length `seq_len` (convention: module docstring).

    Keys: matmul_params, forward_matmul (2 N), forward_attention (2 L S H d_h), forward, training
    (3 x forward: 6 N + 6 L S H d_h).
    """
    n = matmul_params(config)
    attn_fwd = 2 * config.n_layers * seq_len * config.n_heads * config.resolved_head_dim
    forward = 2 * n + attn_fwd
    return {
        "matmul_params": n,
        "forward_matmul": 2 * n,
        "forward_attention": attn_fwd,
        "forward": forward,
        "training": 3 * forward,
    }
