"""One forward path: training, prefill and token-by-token decoding run the same layer call and agree.

For every causal architecture in the registry (new records are picked up automatically) and every
layer type (softmax attention, linear attention, selective SSM), three computations of the same
tokens must give the same logits at every position:

    training   model(tokens): no cache
    prefill    model.extend(tokens, fresh=True): one call with a cache
    steps      model.extend(token_t) for t = 0..L-1, one token per call, from an empty cache

and at the layer level a Block called without a cache, with a fresh cache over all tokens, and
token by token with its own returned state, gives the same outputs (the one-call contract of
lmx.nn.blocks.Block.__call__).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmx import registry
from lmx.nn import build_model, kv_cache, masks
from lmx.nn.blocks import Block
from lmx.nn.layer_inputs import LayerCache, LayerInputs, MaskKind
from tests.nn.helpers import tiny_config

B, L = 2, 6
LAYER_TYPES = {
    "softmax": dict(),
    "linear": dict(attention__kind="linear", position__kind="none"),
    "ssm": dict(layer_pattern="MA"),
}


def _cases():
    for arch, record in registry.ARCHITECTURES.items():
        if not record.causal:
            continue
        for name, overrides in LAYER_TYPES.items():
            if name == "linear" and not record.linear_attention or name == "ssm" and not record.hybrid_layers:
                continue
            yield pytest.param(arch, overrides, id=f"{arch}-{name}")


def _config(arch, overrides):
    return tiny_config(arch=arch, init_std=0.3, **overrides)


@pytest.mark.parametrize("arch,overrides", list(_cases()))
def test_training_prefill_and_steps_agree(arch, overrides):
    config = _config(arch, overrides)
    model = build_model(config, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(1), (B, L), 0, config.vocab_size, dtype=jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
    record = config.architecture
    extra, cache_extra, training_args = {}, {}, (tokens,)
    if record.prefix:  # a prefix of 2 tokens per row: bidirectional inside it in every computation
        prefix_B = jnp.full((B,), 2, jnp.int32)
        extra = {"prefix_len_B": prefix_B}
    if record.has_cross_attention:
        encoder_tokens = jax.random.randint(jax.random.key(2), (B, 5), 0, config.vocab_size, dtype=jnp.int32)
        states = model.encode(encoder_tokens)
        training_args = (encoder_tokens, tokens)
        cache_extra = {"context_len": 5}
        extra = {"encoder_states_BxSxD": states}
    no_states = {k: v for k, v in extra.items() if k != "encoder_states_BxSxD"}
    graphdef, params = nnx.split(model)

    @jax.jit
    def training(params):
        m = nnx.merge(graphdef, params)
        if record.prefix:
            return m(tokens, prefix_len_B=extra["prefix_len_B"])
        return m(*training_args)

    @jax.jit
    def prefill(params):
        m = nnx.merge(graphdef, params)
        cache = kv_cache.init_cache(config, B, L, **cache_extra)
        return m.extend(tokens, positions, cache, fresh=True, **extra)[0]

    @functools.partial(jax.jit, static_argnames="fresh")
    def step(params, cache, tokens_BxT, positions_BxT, fresh):
        m = nnx.merge(graphdef, params)
        return m.extend(tokens_BxT, positions_BxT, cache, fresh=fresh, **(extra if fresh else no_states))

    def steps(params):
        cache = kv_cache.init_cache(config, B, L, **cache_extra)
        first = 2 if record.prefix else 1  # a prefix-LM's prefix arrives whole (it is bidirectional)
        logits, cache = step(params, cache, tokens[:, :first], positions[:, :first], True)
        out = [logits]
        for t in range(first, L):
            logits, cache = step(params, cache, tokens[:, t:t + 1], positions[:, t:t + 1], False)
            out.append(logits)
        return jnp.concatenate(out, axis=1)

    want = np.asarray(training(params))
    np.testing.assert_allclose(np.asarray(prefill(params)), want, rtol=1e-5, atol=1e-5, err_msg="prefill")
    np.testing.assert_allclose(np.asarray(steps(params)), want, rtol=1e-5, atol=1e-5, err_msg="steps")


def _layer_inputs(positions, plan):
    mask = masks.combine(masks.causal(positions, plan.k_positions), masks.padding(plan.k_positions >= 0))
    return LayerInputs(positions=positions, mask=mask, mask_kind=MaskKind.DYNAMIC,
                       valid=jnp.ones(positions.shape, bool))


@pytest.mark.parametrize("layer_type,overrides", [("A", {}), ("A", LAYER_TYPES["linear"]), ("M", {})],
                         ids=["attention", "linear_attention", "ssm"])
@pytest.mark.parametrize("per_layer", [False, True], ids=["attend_then_write", "write_first"])
def test_block_call_with_and_without_cache(layer_type, overrides, per_layer):
    config = _config("decoder", dict(overrides, layer_pattern=layer_type))
    block = Block(config, layer_type=layer_type, rngs=nnx.Rngs(3))
    x = jax.random.normal(jax.random.key(4), (B, L, config.d_model), jnp.float32)
    positions = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
    want = np.asarray(block(x, positions))  # training: an array, no cache

    empty = kv_cache.init_cache(config, B, L, per_layer=per_layer)
    state0 = empty.layers[0] if per_layer else jax.tree.map(lambda a: a[0], empty.layers)

    plan, _ = kv_cache.plan_call(empty, positions, jnp.ones((B, L), bool), True, False)
    y, state = block(x, _layer_inputs(positions, plan), LayerCache(state0, plan))
    np.testing.assert_allclose(np.asarray(y), want, rtol=1e-5, atol=1e-5, err_msg="prefill")
    assert jax.tree.structure(state) == jax.tree.structure(state0)  # the call returns the state it was given, updated

    cache, state, out = empty, state0, []
    for t in range(L):
        plan, after = kv_cache.plan_call(cache, positions[:, t:t + 1], jnp.ones((B, 1), bool), t == 0, False)
        y_t, state = block(x[:, t:t + 1], _layer_inputs(positions[:, t:t + 1], plan), LayerCache(state, plan))
        cache = kv_cache.DecodeCache(after, cache.layers, per_layer=per_layer)
        out.append(y_t)
    np.testing.assert_allclose(np.asarray(jnp.concatenate(out, 1)), want, rtol=1e-5, atol=1e-5, err_msg="steps")


def test_layer_inputs_hold_no_decoding_fields_and_the_mask_kind_is_checked():
    fields = set(LayerInputs.__dataclass_fields__)
    assert not fields & {"k_positions", "slots", "fresh", "write_first"}
    with pytest.raises(ValueError):
        LayerInputs(positions=jnp.zeros((1, 1), jnp.int32), mask_kind="causl")


def test_parameter_paths_do_not_depend_on_the_config():
    paths = {}
    for name, overrides in {"attention": {}, "ssm": dict(layer_pattern="M"), "rezero": dict(norm__placement="rezero"),
                            "post": dict(norm__placement="post")}.items():
        config = _config("decoder", overrides)
        block = Block(config, layer_type=config.layer_pattern, rngs=nnx.Rngs(0))
        paths[name] = {path[0] for path, _ in nnx.to_flat_state(nnx.state(block, nnx.Param))}
    assert paths["attention"] == paths["post"] == {"mixer", "mixer_norm", "ffn", "ffn_norm"}
    assert paths["ssm"] == {"mixer", "mixer_norm", "ffn", "ffn_norm"}
    assert paths["rezero"] == {"mixer", "ffn", "gate"}
