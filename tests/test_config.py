import json

import pytest

from lmx.config import Config, load_config
from lmx.errors import ConfigError


def test_default_and_tiny_configs_load():
    assert load_config("default").name == "default"
    tiny = load_config("tiny")
    assert tiny.model.d_model == 32


def test_overrides_are_coerced_to_field_types():
    config = Config().with_overrides([
        "model.d_model=128", "optim.lr=1e-3", "model.tie_embeddings=false", "mesh.shape={\"data\": 1}",
        "eval.sample_prompts=[\"a\", \"b\"]", "data.corpus=some/dir",
    ])
    assert config.model.d_model == 128 and isinstance(config.model.d_model, int)
    assert config.optim.lr == pytest.approx(1e-3)
    assert config.model.tie_embeddings is False
    assert config.mesh.shape == {"data": 1}
    assert config.eval.sample_prompts == ("a", "b")
    assert config.data.corpus == "some/dir"


def test_json_round_trip():
    config = Config().with_overrides(["model.n_layers=3"])
    assert Config.from_dict(json.loads(config.to_json())) == config


@pytest.mark.parametrize(
    "override, field",
    [
        ("model.nope=1", "model.nope"),
        ("nope.d_model=1", "nope"),
        ("model.d_model=abc", "model.d_model"),
        ("model.d_model=1.5", "model.d_model"),
        ("model.tie_embeddings=maybe", "model.tie_embeddings"),
        ("model.n_heads=3", "model.n_heads"),
        ("model.n_kv_heads=3", "model.n_kv_heads"),
        ("optim.lr=0", "optim.lr"),
        ("optim.lr=-1", "optim.lr"),
        ("optim.lr=inf", "optim.lr"),
        ("optim.lr=nan", "optim.lr"),
        ("optim.weight_decay=inf", "optim.weight_decay"),
        ("train.preemption_grace_seconds=inf", "train.preemption_grace_seconds"),
        ("train.steps=0", "train.steps"),
        ("data.batch_size=0", "data.batch_size"),
        ("model.position.kind=wat", "model.position.kind"),
        ("data.seq_len=100000", "data.seq_len"),
        ("mesh.shape={\"dat\": 2}", "mesh.shape"),
        ("mesh.shape=[1]", "mesh.shape"),
        ("optim.grad_accum_steps=3", "optim.grad_accum_steps"),
        ("model", "--set"),
    ],
)
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ConfigError) as info:
        Config().with_overrides([override])
    assert field in str(info.value)
    assert "\n" not in str(info.value)


def test_non_finite_numbers_are_refused_in_python_too():
    from lmx.config import OptimConfig

    with pytest.raises(ConfigError, match="optim.lr: must be positive and finite, got inf"):
        OptimConfig(lr=float("inf"))


def test_from_dict_rejects_unknown_and_mistyped_keys():
    with pytest.raises(ConfigError, match="model.widht"):
        Config.from_dict({"model": {"widht": 3}})
    with pytest.raises(ConfigError, match="model.d_model"):
        Config.from_dict({"model": {"d_model": "64"}})
    with pytest.raises(ConfigError, match="model.d_model"):
        Config.from_dict({"model": {"d_model": True}})


def test_missing_config_file():
    with pytest.raises(ConfigError, match="--config"):
        load_config("does-not-exist")


def test_derived_sizes():
    model = Config().model
    assert model.resolved_head_dim == model.d_model // model.n_heads
    # 8/3 * 256 = 682.67 rounded up to a multiple of 32
    assert model.resolved_d_ff == 704
