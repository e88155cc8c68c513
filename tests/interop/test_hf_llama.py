"""Hugging Face Llama export/import: logits parity, weight round trip, refusal of non-Llama configs."""

from __future__ import annotations

import re
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmx.config import ModelConfig, NormConfig, PositionConfig, RopeConfig
from lmx.errors import ConfigError
from lmx.interop.hf_llama import check_llama_compatible, from_hf_llama, to_hf_llama, to_hf_llama_config
from lmx.nn import build_model

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

TINY = ModelConfig(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=160, vocab_size=128, max_seq_len=16,
                   position=PositionConfig(rope=RopeConfig(theta=500.0)), norm=NormConfig(eps=1e-5))


def randomized(config: ModelConfig, seed: int = 0):
    """An lmx model whose every parameter is random and O(1)-effective: matrices N(0, 1/fan_in), norm
    scales 1 + N(0, 0.2^2), so a wrong transpose, head order, RoPE layout or norm mapping changes the
    logits by far more than the tolerance."""
    model = nnx.eval_shape(lambda: build_model(config, rngs=nnx.Rngs(seed)))  # every value is set below
    state = nnx.state(model, nnx.Param)
    rng = np.random.default_rng(seed + 1)  # numpy: no per-shape XLA compiles of eager jax.random
    for path, var in nnx.to_flat_state(state):
        w = var.get_value()
        if path[-1] == "scale":
            value = 1.0 + 0.2 * rng.standard_normal(w.shape)
        elif path[-1] == "embed":
            value = rng.standard_normal(w.shape)
        else:
            # blocks are [layers, in, ...] (out: [layers, N, H, D]); unembed is [D, V]
            fan_in = w.shape[1] * w.shape[2] if path[-1] == "out" else w.shape[1 if path[0] == "blocks" else 0]
            value = rng.standard_normal(w.shape) / np.sqrt(fan_in)
        var.set_value(jnp.asarray(value, w.dtype))
    nnx.update(model, state)
    return model


def tokens(batch: int = 2, length: int = 16, vocab: int = 128, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, (batch, length)).astype(np.int32)


def hf_logits(hf_model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return hf_model(torch.from_numpy(ids.astype(np.int64))).logits.float().numpy()


@pytest.mark.parametrize("tie,n_kv_heads", [(True, 2), (False, 2), (False, 4), (True, 1)],
                         ids=["tied-gqa", "untied-gqa", "untied-mha", "tied-mqa"])
def test_logits_match_hugging_face(tie, n_kv_heads):
    config = TINY.replace(tie_embeddings=tie, n_kv_heads=n_kv_heads)
    model = randomized(config)
    hf_model = to_hf_llama(model)
    assert not hf_model.training and hf_model.lm_head.weight.dtype == torch.float32
    if tie:
        assert hf_model.lm_head.weight.data_ptr() == hf_model.model.embed_tokens.weight.data_ptr()
    ids = tokens()
    ours = np.asarray(model(jnp.asarray(ids)))
    theirs = hf_logits(hf_model, ids)
    scale = float(np.abs(theirs).max())
    assert scale > 1.0  # the weights are not negligible: a mapping error would show
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4 * scale)
    assert (ours.argmax(-1) == theirs.argmax(-1)).mean() > 0.99


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_round_trip_gives_identical_params(tie):
    config = TINY.replace(tie_embeddings=tie)
    model = randomized(config, seed=3)
    config_back, model_back = from_hf_llama(to_hf_llama(model))
    assert config_back == config
    before = nnx.to_flat_state(nnx.state(model, nnx.Param))
    after = dict(nnx.to_flat_state(nnx.state(model_back, nnx.Param)))
    assert set(after) == {path for path, _ in before}
    for path, var in before:
        np.testing.assert_array_equal(np.asarray(after[path].get_value()), np.asarray(var.get_value()), err_msg=str(path))


def test_import_of_explicit_head_dim_and_overrides():
    config = TINY.replace(head_dim=32, tie_embeddings=False)  # N*H = 128 != d_model
    hf_config = to_hf_llama_config(config)
    assert hf_config.head_dim == 32 and hf_config.num_key_value_heads == 2
    rope = getattr(hf_config, "rope_parameters", None) or {"rope_theta": hf_config.rope_theta}
    assert rope["rope_theta"] == 500.0
    model = randomized(config)
    back, imported = from_hf_llama(to_hf_llama(model), attention__kernel="plain")
    assert back == config.replace(attention__kernel="plain")
    ids = tokens(1, 8)
    np.testing.assert_allclose(np.asarray(imported(jnp.asarray(ids))), np.asarray(model(jnp.asarray(ids))),
                               rtol=0, atol=1e-4)


@pytest.mark.parametrize("field,value", [("position.kind", "alibi"), ("ffn.activation", "gelu"),
                                         ("norm.kind", "layernorm"), ("norm.placement", "post"),
                                         ("attention.qk_norm", True), ("position.rope.layout", "interleaved"),
                                         ("position.rope.fraction", 0.5), ("logit_soft_cap", 30.0),
                                         ("scale_embeddings", True), ("arch", "encoder"),
                                         ("attention.pattern", "sliding_window")])
def test_incompatible_configs_name_the_field(field, value):
    extra = {"attention.window": 4} if field == "attention.pattern" else {}
    config = TINY.replace(**{field: value}, **extra)
    with pytest.raises(ConfigError, match=rf"^model\.{re.escape(field)}: "):
        check_llama_compatible(config)
    with pytest.raises(ConfigError, match=rf"model\.{re.escape(field)}"):
        to_hf_llama_config(config)


def test_lmx_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None; "
            "import lmx.interop, lmx.interop.hf_llama; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr
