"""Model building blocks for lmx: norms, positions, FFN, attention, the Transformer, accounting.

Every module is a Flax NNX module usable in one's own model; every parameter carries logical axis
names (see `logical_partition_specs`). Registries map config names to implementations: NORMS
(config.norm.kind), POSITIONS (config.position.kind), FFN_ACTIVATIONS (config.ffn.activation), ATTENTION_IMPLS
(config.attention.kernel), REMAT (config.remat). See docs/model.md.
"""

from lmx.nn.accounting import flops_per_token, matmul_params, param_count
from lmx.nn.architectures import ARCHITECTURES, Architecture, build_model
from lmx.nn.attention import ATTENTION_IMPLS, Attention, LinearAttention, segment_mask
from lmx.nn.blocks import deepnorm_constants
from lmx.nn.layer_inputs import LayerCache, LayerInputs, MaskKind
from lmx.nn.masks import MASKS
from lmx.nn.mlp import FFN_ACTIVATIONS, MLP, FFNActivation
from lmx.nn.norms import NORMS, LayerNorm, RMSNorm
from lmx.nn.params import logical_names, param
from lmx.nn.partition import logical_partition_specs
from lmx.nn.positions import POSITIONS, apply_rope, rope_frequencies
from lmx.nn.remat import REMAT
from lmx.nn.rotary import apply_rotary
from lmx.nn.transformer import Block, EncoderDecoder, Transformer

__all__ = [
    "MASKS",
    "ARCHITECTURES",
    "Architecture",
    "EncoderDecoder",
    "LayerCache",
    "LayerInputs",
    "MaskKind",
    "LinearAttention",
    "apply_rotary",
    "build_model",
    "deepnorm_constants",
    "ATTENTION_IMPLS",
    "Attention",
    "Block",
    "FFNActivation",
    "FFN_ACTIVATIONS",
    "LayerNorm",
    "MLP",
    "NORMS",
    "POSITIONS",
    "REMAT",
    "RMSNorm",
    "Transformer",
    "apply_rope",
    "flops_per_token",
    "logical_names",
    "logical_partition_specs",
    "matmul_params",
    "param",
    "param_count",
    "rope_frequencies",
    "segment_mask",
]
