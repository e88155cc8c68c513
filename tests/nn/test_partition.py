import jax
import pytest
from flax import nnx

from lmx.nn import logical_partition_specs
from lmx.parallel.rules import STRATEGIES, logical_to_spec

from .helpers import build, tiny_config

LOGICAL = {"vocab", "embed", "heads", "kv_heads", "head_dim", "mlp", "layers", None}  # None: replicated


@pytest.fixture(scope="module", params=[{}, {"tie_embeddings": False, "norm__kind": "layernorm", "ffn__activation": "relu"}])
def model(request):
    return build(tiny_config(**request.param))


def _flat(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flat(value, prefix + (key,))
        else:
            yield prefix + (key,), value


def test_every_param_has_logical_names_of_its_rank(model):
    specs = logical_partition_specs(model)
    shapes = dict(_flat(nnx.state(model, nnx.Param).to_pure_dict()))
    names = dict(_flat(specs))
    assert set(names) == set(shapes)
    for path, tup in names.items():
        assert isinstance(tup, tuple) and len(tup) == shapes[path].ndim, (path, tup)
        assert set(tup) <= LOGICAL, (path, tup)
        stacked = path[0] == "blocks"
        assert (tup[0] == "layers") == stacked, (path, tup)
        assert tup.count("layers") == (1 if stacked else 0)
        if stacked:
            assert shapes[path].shape[0] == model.config.n_layers


def test_specs_agree_with_flax_partition_spec(model):
    specs = dict(_flat(logical_partition_specs(model)))
    flax_specs = nnx.get_partition_spec(nnx.state(model))
    for path, var in nnx.to_flat_state(flax_specs):
        assert tuple(var.get_value()) == specs[path]


def test_state_and_module_inputs_agree(model):
    assert logical_partition_specs(model) == logical_partition_specs(nnx.state(model))


def test_specs_map_to_mesh_axes_for_every_strategy(model):
    specs = logical_partition_specs(model)
    for rules in STRATEGIES.values():
        mesh_specs = jax.tree.map(
            lambda n, r=rules: logical_to_spec(n, r), specs, is_leaf=lambda x: isinstance(x, tuple)
        )
        leaves = [v for _, v in _flat(mesh_specs)]
        assert len(leaves) == len(list(_flat(specs)))
    tp = dict(
        _flat(
            jax.tree.map(
                lambda n: logical_to_spec(n, STRATEGIES["tp"]), specs, is_leaf=lambda x: isinstance(x, tuple)
            )
        )
    )
    assert tp[("blocks", "mixer", "query")] == jax.sharding.PartitionSpec(None, None, "tensor", None)
    assert tp[("blocks", "ffn", "down")] == jax.sharding.PartitionSpec(None, "tensor", None)
