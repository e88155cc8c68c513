import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmx.nn import REMAT, Transformer

from .helpers import build, forward_fn, random_tokens, tiny_config

B, L = 2, 16


@pytest.fixture(scope="module")
def model():
    return build(tiny_config())


@pytest.fixture(scope="module")
def forward(model):
    return forward_fn(model)


def test_logits_shape_dtype_and_default_positions(model, forward):
    fwd, state = forward
    tokens = random_tokens(0, B, L, model.config.vocab_size)
    logits = fwd(state, tokens)
    assert logits.shape == (B, L, model.config.vocab_size) and logits.dtype == jnp.float32
    explicit = fwd(state, tokens, jnp.tile(jnp.arange(L, dtype=jnp.int32), (B, 1)))
    np.testing.assert_array_equal(logits, explicit)
    # eager call (no jit) agrees
    np.testing.assert_allclose(model(tokens), logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("t", [1, 7, 15])
def test_causality_future_tokens_do_not_change_past_logits(model, forward, t):
    fwd, state = forward
    tokens = random_tokens(1, B, L, model.config.vocab_size)
    changed = tokens.at[:, t:].set(random_tokens(2, B, L - t, model.config.vocab_size))
    assert bool(jnp.any(changed != tokens))
    a, b = fwd(state, tokens), fwd(state, changed)
    np.testing.assert_array_equal(a[:, :t], b[:, :t])
    assert not np.allclose(a[:, t:], b[:, t:])


def test_segments_never_attend_across(model, forward):
    fwd, state = forward
    split = 6
    seg = jnp.tile((jnp.arange(L) >= split).astype(jnp.int32), (B, 1))
    pos = jnp.tile(jnp.where(jnp.arange(L) >= split, jnp.arange(L) - split, jnp.arange(L)), (B, 1))
    tokens = random_tokens(3, B, L, model.config.vocab_size)
    changed = tokens.at[:, :split].set(random_tokens(4, B, split, model.config.vocab_size))
    a, b = fwd(state, tokens, pos, seg), fwd(state, changed, pos, seg)
    np.testing.assert_array_equal(a[:, split:], b[:, split:])
    # the second segment sees exactly what it would see as a sequence of its own
    alone = fwd(state, tokens[:, split:])
    np.testing.assert_allclose(a[:, split:], alone, rtol=1e-5, atol=1e-5)
    # without segment ids the first segment does leak into the second
    assert not np.allclose(fwd(state, tokens, pos)[:, split:], fwd(state, changed, pos)[:, split:])


def test_layers_are_initialised_independently(model):
    q = model.blocks.mixer.query[...]
    assert q.shape[0] == model.config.n_layers
    assert not np.allclose(q[0], q[1])


def test_residual_output_projections_are_scaled():
    config = tiny_config(d_model=64, n_heads=4, n_kv_heads=4, d_ff=128, init_std=0.05)
    model = build(config)
    expected = 0.05 / np.sqrt(2 * config.n_layers)
    for p in (model.blocks.mixer.out, model.blocks.ffn.down):
        assert abs(float(jnp.std(p[...])) / expected - 1) < 0.1
    for p in (model.blocks.mixer.query, model.blocks.ffn.up, model.embed):
        assert abs(float(jnp.std(p[...])) / 0.05 - 1) < 0.1


@pytest.mark.parametrize("overrides", [{}, {"tie_embeddings": False, "norm__kind": "layernorm", "ffn__activation": "gelu"}])
def test_scan_equals_unrolled(overrides):
    scanned = build(tiny_config(scan_layers=True, **overrides))
    unrolled = build(tiny_config(scan_layers=False, **overrides))
    assert isinstance(nnx.state(scanned), nnx.State)
    tokens = random_tokens(5, B, L, scanned.config.vocab_size)
    fs, ss = forward_fn(scanned)
    fu, su = forward_fn(unrolled)
    jax.tree.map(np.testing.assert_array_equal, nnx.to_pure_dict(ss), nnx.to_pure_dict(su))
    np.testing.assert_allclose(fs(ss, tokens), fu(su, tokens), rtol=1e-6, atol=1e-6)


def _loss_grads(config, tokens):
    model = build(config)
    graphdef, state = nnx.split(model)

    @jax.jit
    def grads(state):
        def loss(state):
            logits = nnx.merge(graphdef, state)(tokens[:, :-1])
            logp = jax.nn.log_softmax(logits)
            return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1))

        return jax.grad(loss)(state)

    return nnx.to_pure_dict(grads(state))


def test_remat_policies_give_the_same_gradients():
    tokens = random_tokens(6, B, L + 1, tiny_config().vocab_size)
    reference = _loss_grads(tiny_config(remat="none"), tokens)
    cases = [dict(remat=name) for name in sorted(REMAT) if name != "none"]
    cases.append(dict(remat="full", scan_layers=False))
    for case in cases:
        got = _loss_grads(tiny_config(**case), tokens)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), got, reference)
    assert all(bool(jnp.any(g != 0)) for g in jax.tree.leaves(reference))


def test_bf16_compute_gives_finite_float32_logits_close_to_fp32():
    fp32 = build(tiny_config())
    bf16 = build(tiny_config(compute_dtype="bfloat16"))
    tokens = random_tokens(7, B, L, fp32.config.vocab_size)
    f32, s32 = forward_fn(fp32)
    f16, s16 = forward_fn(bf16)
    l32, l16 = f32(s32, tokens), f16(s16, tokens)
    assert l16.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(l16)))
    scale = float(jnp.max(jnp.abs(l32)))
    np.testing.assert_allclose(l16, l32, atol=0.05 * scale)
    assert float(jnp.mean(jnp.abs(l16 - l32))) < 0.01 * scale


def test_bf16_params_are_stored_in_bf16():
    model = build(tiny_config(param_dtype="bfloat16", compute_dtype="bfloat16"))
    dtypes = {p.dtype for p in jax.tree.leaves(nnx.state(model, nnx.Param))}
    assert dtypes == {jnp.dtype(jnp.bfloat16)}
    logits = model(random_tokens(8, 1, 8, model.config.vocab_size))
    assert logits.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(logits)))


def test_tied_and_untied_output():
    tied = build(tiny_config())
    untied = build(tiny_config(tie_embeddings=False))
    assert not hasattr(tied, "unembed")
    assert untied.unembed.shape == (tied.config.d_model, tied.config.vocab_size)
    # tied logits are the final hidden states times embedding^T: zeroing one embedding row
    # zeroes that vocabulary entry's logit everywhere (for tokens that do not use it)
    tied.embed[...] = tied.embed[...].at[5].set(0.0)
    tokens = jnp.full((1, 4), 7, jnp.int32)
    np.testing.assert_array_equal(tied(tokens)[..., 5], 0.0)


@pytest.mark.parametrize("position", ["none", "rope"])
def test_one_layer_causal_nope_ignores_the_order_of_earlier_tokens(position):
    """Without positions (NoPE), causal attention at position i averages the values of tokens 0..i with
    weights that depend only on the tokens, not on where they stand; the FFN, final norm and unembedding
    act position by position. So in a one-layer model the logits at i depend on token i and the multiset
    of tokens 0..i-1, not on their order. (From the second layer on this no longer holds: the states of
    the earlier positions depend on their own prefixes.) RoPE is the control: it sees the order."""
    model = build(tiny_config(position__kind=position, n_layers=1, n_kv_heads=1, init_std=0.4))
    fwd, state = forward_fn(model)
    tokens = random_tokens(9, 1, L, model.config.vocab_size)
    rng = np.random.default_rng(0)
    for i in (5, L - 1):
        perm = rng.permutation(i)
        assert (perm != np.arange(i)).any()
        permuted = tokens.at[0, :i].set(tokens[0, perm])
        before, after = np.asarray(fwd(state, tokens))[0, i], np.asarray(fwd(state, permuted))[0, i]
        if position == "none":
            np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)
        else:
            assert np.abs(after - before).max() > 1e-2


def test_transformer_is_a_module_with_expected_children():
    model = build(tiny_config())
    assert isinstance(model, Transformer)
    assert set(nnx.state(model).to_pure_dict()) == {"embed", "blocks", "final_norm"}
    assert dataclasses.is_dataclass(model.config)
