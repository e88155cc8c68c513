"""Names live once: each registry is the table the config validates against and the code looks up."""

import dataclasses
import re

import pytest

from lmx import registry
from lmx.config import Config, ModelConfig
from lmx.errors import ConfigError

# (registry, dotted key whose value it selects, a config that makes the value count)
SETTINGS = [
    (registry.POSITIONS, "model.position.kind"),
    (registry.ROPE_LAYOUTS, "model.position.rope.layout"),
    (registry.ATTENTION_KINDS, "model.attention.kind"),
    (registry.ATTENTION_KERNELS, "model.attention.kernel"),
    (registry.ATTENTION_PATTERNS, "model.attention.pattern"),
    (registry.LINEAR_FEATURE_MAPS, "model.attention.feature_map"),
    (registry.FFN_ACTIVATIONS, "model.ffn.activation"),
    (registry.NORMS, "model.norm.kind"),
    (registry.NORM_PLACEMENTS, "model.norm.placement"),
    (registry.INITS, "model.init"),
    (registry.POOLINGS, "model.pooling"),
    (registry.DTYPES, "model.param_dtype"),
    (registry.REMAT, "model.remat"),
    (registry.ARCHITECTURES, "model.arch"),
    (registry.TOKENIZERS, "data.tokenizer"),
    (registry.NORMALIZATIONS, "data.normalization"),
    (registry.SCHEDULES, "optim.schedule"),
    (registry.OPTIMIZERS, "optim.name"),
    (registry.STRATEGIES, "mesh.strategy"),
]


@pytest.mark.parametrize("table,key", SETTINGS, ids=[key for _, key in SETTINGS])
def test_config_refuses_names_outside_the_registry_and_names_the_key(table, key):
    assert len(table) > 0
    expected = f"{key}: unknown value 'no_such_variant'; choose one of {', '.join(table.names())}"
    with pytest.raises(ConfigError, match="^" + re.escape(expected)):
        Config().with_overrides([f"{key}=no_such_variant"])


def test_a_newly_registered_name_is_accepted_by_the_config_without_editing_it():
    registry.FFN_ACTIVATIONS.register("test_only_square", registry.FFN_ACTIVATIONS["relu"])
    try:
        config = Config().with_overrides(["model.ffn.activation=test_only_square"])
        assert config.model.ffn.activation == "test_only_square"
    finally:
        registry.FFN_ACTIVATIONS._entries.pop("test_only_square")


def test_a_name_registered_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        registry.NORMS.register("rmsnorm", object())


def test_layer_types_are_registered_mixers():
    assert set(registry.LAYER_TYPES) == {"A", "M"}
    with pytest.raises(ConfigError, match="model.layer_pattern"):
        ModelConfig(layer_pattern="AX")


def test_every_architecture_record_names_a_model_class_and_an_objective():
    for name, record in registry.ARCHITECTURES.items():
        assert record.name == name
        assert dataclasses.is_dataclass(record) and isinstance(record.model_class, type) and record.objective
