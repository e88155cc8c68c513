import math

import jax
import pytest
from flax import nnx

from lmx.nn import flops_per_token, param_count
from lmx.nn.accounting import matmul_params

from .helpers import build, tiny_config

CONFIGS = {
    "tied_swiglu_gqa": tiny_config(),
    "untied_gelu_mha": tiny_config(tie_embeddings=False, ffn__activation="gelu", n_kv_heads=4),
    "layernorm_geglu_mqa": tiny_config(norm__kind="layernorm", ffn__activation="geglu", n_kv_heads=1, n_layers=1),
    "relu_headdim_derived_dff": tiny_config(ffn__activation="relu", head_dim=12, d_ff=0, d_model=48, n_layers=3),
    "silu_untied_layernorm": tiny_config(ffn__activation="silu", tie_embeddings=False, norm__kind="layernorm"),
}


def _real_count(config, predicate=lambda path: True):
    abstract = nnx.eval_shape(lambda: build(config))
    flat = nnx.to_flat_state(nnx.state(abstract, nnx.Param))
    return sum(math.prod(var.get_value().shape) for path, var in flat if predicate(path))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_param_count_equals_built_model(name):
    config = CONFIGS[name]
    assert param_count(config) == _real_count(config)
    not_vocab = lambda path: path[0] not in ("embed", "unembed")
    assert param_count(config, include_embedding=False) == _real_count(config, not_vocab)


def test_param_count_matches_a_real_model_build():
    config = tiny_config(n_layers=1)
    model = build(config)
    assert param_count(config) == sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_param_count_by_hand():
    # d=32, 2 layers, 4 heads x 8, 2 kv heads, d_ff=64 swiglu, rmsnorm, vocab 300 tied
    attn = 32 * 32 + 32 * 16 * 2 + 32 * 32
    ffn = 3 * 32 * 64
    expected = 2 * (attn + ffn + 2 * 32) + 32 + 300 * 32
    assert param_count(tiny_config()) == expected


def test_flops_per_token_convention():
    config = tiny_config()
    seq_len = 16
    n = 2 * (32 * 32 + 32 * 16 * 2 + 32 * 32 + 3 * 32 * 64) + 32 * 300  # output projection counted
    assert matmul_params(config) == n
    flops = flops_per_token(config, seq_len)
    attention = 6 * config.n_layers * seq_len * config.n_heads * config.resolved_head_dim
    assert flops["matmul_params"] == n
    assert flops["training"] == 6 * n + attention
    assert flops["training"] == 6 * n + 12 * 2 * 4 * 8 * seq_len // 2  # 12 L H d_h S / 2
    assert flops["forward"] * 3 == flops["training"]
    assert flops["forward_matmul"] + flops["forward_attention"] == flops["forward"]


def test_untied_output_costs_the_same_flops_but_more_params():
    tied, untied = tiny_config(), tiny_config(tie_embeddings=False)
    assert flops_per_token(tied, 16) == flops_per_token(untied, 16)
    assert param_count(untied) - param_count(tied) == 300 * 32
    assert param_count(untied, include_embedding=False) == param_count(tied, include_embedding=False)
