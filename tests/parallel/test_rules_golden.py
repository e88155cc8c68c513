"""Golden table: the PartitionSpec of every parameter of a small model under each strategy.

Written out literally so that a change to a rules table or to a parameter's logical names shows up
as a diff here. Model: d_model 32, 2 layers, 4 heads, 2 kv heads, d_ff 64, vocab 320, untied output.
"""

import jax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from lmx.config import ModelConfig
from lmx.nn import Transformer
from lmx.parallel.rules import STRATEGIES, logical_to_spec
from lmx.parallel.shardings import logical_names, param_path

CONFIG = ModelConfig(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, vocab_size=320,
                     max_seq_len=32, tie_embeddings=False)

# parameter: (shape, logical names, {strategy: spec})
GOLDEN = {
    "blocks.mixer.query": ((2, 32, 4, 8), ("layers", "embed", "heads", "head_dim"), {
        "dp": P(None, None, None, None), "fsdp": P(None, "fsdp", None, None),
        "tp": P(None, None, "tensor", None), "fsdp_tp": P(None, "fsdp", "tensor", None)}),
    "blocks.mixer.key": ((2, 32, 2, 8), ("layers", "embed", "kv_heads", "head_dim"), {
        "dp": P(None, None, None, None), "fsdp": P(None, "fsdp", None, None),
        "tp": P(None, None, "tensor", None), "fsdp_tp": P(None, "fsdp", "tensor", None)}),
    "blocks.mixer.value": ((2, 32, 2, 8), ("layers", "embed", "kv_heads", "head_dim"), {
        "dp": P(None, None, None, None), "fsdp": P(None, "fsdp", None, None),
        "tp": P(None, None, "tensor", None), "fsdp_tp": P(None, "fsdp", "tensor", None)}),
    "blocks.mixer.out": ((2, 4, 8, 32), ("layers", "heads", "head_dim", "embed"), {
        "dp": P(None, None, None, None), "fsdp": P(None, None, None, "fsdp"),
        "tp": P(None, "tensor", None, None), "fsdp_tp": P(None, "tensor", None, "fsdp")}),
    "blocks.mixer_norm.scale": ((2, 32), ("layers", "embed"), {
        "dp": P(None, None), "fsdp": P(None, "fsdp"), "tp": P(None, None), "fsdp_tp": P(None, "fsdp")}),
    "blocks.ffn.gate": ((2, 32, 64), ("layers", "embed", "mlp"), {
        "dp": P(None, None, None), "fsdp": P(None, "fsdp", None),
        "tp": P(None, None, "tensor"), "fsdp_tp": P(None, "fsdp", "tensor")}),
    "blocks.ffn.up": ((2, 32, 64), ("layers", "embed", "mlp"), {
        "dp": P(None, None, None), "fsdp": P(None, "fsdp", None),
        "tp": P(None, None, "tensor"), "fsdp_tp": P(None, "fsdp", "tensor")}),
    "blocks.ffn.down": ((2, 64, 32), ("layers", "mlp", "embed"), {
        "dp": P(None, None, None), "fsdp": P(None, None, "fsdp"),
        "tp": P(None, "tensor", None), "fsdp_tp": P(None, "tensor", "fsdp")}),
    "blocks.ffn_norm.scale": ((2, 32), ("layers", "embed"), {
        "dp": P(None, None), "fsdp": P(None, "fsdp"), "tp": P(None, None), "fsdp_tp": P(None, "fsdp")}),
    "embed": ((320, 32), ("vocab", "embed"), {
        "dp": P(None, None), "fsdp": P(None, "fsdp"), "tp": P("tensor", None), "fsdp_tp": P("tensor", "fsdp")}),
    "unembed": ((32, 320), ("embed", "vocab"), {
        "dp": P(None, None), "fsdp": P("fsdp", None), "tp": P(None, "tensor"), "fsdp_tp": P("fsdp", "tensor")}),
    "final_norm.scale": ((32,), ("embed",), {
        "dp": P(None), "fsdp": P("fsdp"), "tp": P(None), "fsdp_tp": P("fsdp")}),
}


def _params():
    _, state = nnx.split(nnx.eval_shape(lambda: Transformer(CONFIG, rngs=nnx.Rngs(0))))
    flat = jax.tree_util.tree_flatten_with_path(state, is_leaf=lambda x: isinstance(x, nnx.Variable))[0]
    return {param_path(path): var for path, var in flat}


def test_golden_table_covers_every_parameter_and_strategy():
    assert set(_params()) == set(GOLDEN)
    assert all(set(specs) == set(STRATEGIES) for _, _, specs in GOLDEN.values())


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_partition_specs_match_golden_table(strategy):
    for name, var in _params().items():
        shape, names, specs = GOLDEN[name]
        assert tuple(var.shape) == shape, name
        assert tuple(logical_names(var)) == names, name
        assert logical_to_spec(logical_names(var), STRATEGIES[strategy]) == specs[strategy], (name, strategy)
