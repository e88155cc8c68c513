"""The model catalog: every causal variant is causal, masks hold at the model level, DeepNorm and
ReZero match their definitions at initialisation, kernels agree, and parameter counts are exact."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmx.config import ModelConfig
from lmx.nn import attention_kernels as kernels
from lmx.nn import build_model, masks, param_count
from lmx.nn.blocks import Block, LayerInputs, deepnorm_constants

BASE = ModelConfig(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, vocab_size=64, max_seq_len=32,
                   init_std=0.1)
L = 16


def cfg(**kw) -> ModelConfig:
    return BASE.replace(**kw)


def _logits(model, tokens, **kw):
    return np.asarray(jax.jit(lambda m, t: m(t, **kw))(model, tokens))


def _tokens(seed=0, batch=1, length=L):
    return jax.random.randint(jax.random.key(seed), (batch, length), 0, BASE.vocab_size)


CAUSAL_VARIANTS = [
    dict(position__kind="rope", position__rope__layout="interleaved", position__rope__fraction=0.5),
    dict(position__kind="xpos"),
    dict(position__kind="alibi"),
    dict(position__kind="t5"),
    dict(position__kind="shaw", attention__kernel="plain"),
    dict(position__kind="sinusoidal"),
    dict(position__kind="learned"),
    dict(position__kind="base_n", position__base_n__base=4),
    dict(position__kind="none", attention__qk_norm=True),
    dict(attention__pattern="sliding_window", attention__window=4),
    dict(attention__pattern="block_sparse", attention__window=3, attention__stride=4, attention__global_tokens=2),
    dict(attention__kind="linear", position__kind="none"),
    dict(layer_pattern="MA"),
    dict(norm__placement="post", norm__kind="layernorm"),
    dict(norm__placement="deepnorm", norm__kind="layernorm"),
    dict(norm__placement="rezero"),
    dict(attention__kernel="plain", logit_soft_cap=5.0, scale_embeddings=True),
]


@pytest.mark.parametrize("variant", CAUSAL_VARIANTS, ids=lambda v: ",".join(f"{k}={v[k]}" for k in v))
def test_every_causal_variant_is_causal(variant):
    config = cfg(**variant)
    if variant.get("norm__placement") == "rezero":  # gates start at 0; open them so layers matter
        model = build_model(config, rngs=nnx.Rngs(0))
        model.blocks.gate[...] = jnp.full_like(model.blocks.gate[...], 0.5)
    else:
        model = build_model(config, rngs=nnx.Rngs(0))
    tokens = _tokens()
    base = _logits(model, tokens)
    t = 9
    changed = tokens.at[0, t:].set((tokens[0, t:] + 1) % BASE.vocab_size)
    after = _logits(model, changed)
    np.testing.assert_allclose(after[0, :t], base[0, :t], rtol=1e-5, atol=1e-5)
    assert not np.allclose(after[0, t:], base[0, t:])
    assert param_count(config) == sum(x.size for x in jax.tree.leaves(nnx.state(model)))


def test_prefix_lm_prefix_is_bidirectional_and_suffix_causal():
    model = build_model(cfg(arch="prefix_lm"), rngs=nnx.Rngs(1))
    tokens, prefix = _tokens(1), jnp.asarray([8])
    base = _logits(model, tokens, prefix_len_B=prefix)
    in_prefix = _logits(model, tokens.at[0, 6].set((tokens[0, 6] + 1) % 64), prefix_len_B=prefix)
    assert not np.allclose(in_prefix[0, :6], base[0, :6])  # earlier prefix positions see position 6
    in_suffix = _logits(model, tokens.at[0, 11].set((tokens[0, 11] + 1) % 64), prefix_len_B=prefix)
    np.testing.assert_allclose(in_suffix[0, :11], base[0, :11], rtol=1e-5, atol=1e-5)


def test_nope_encoder_is_permutation_equivariant():
    model = build_model(cfg(arch="encoder", position__kind="none"), rngs=nnx.Rngs(2))
    tokens = _tokens(2)
    perm = np.random.default_rng(0).permutation(L)
    out = _logits(model, tokens)
    out_perm = _logits(model, tokens[:, perm])
    np.testing.assert_allclose(out_perm, out[:, perm], rtol=1e-5, atol=1e-5)
    with_positions = build_model(cfg(arch="encoder", position__kind="learned"), rngs=nnx.Rngs(2))
    assert not np.allclose(_logits(with_positions, tokens[:, perm]), _logits(with_positions, tokens)[:, perm])


def test_sliding_window_model_ignores_tokens_outside_the_window():
    model = build_model(cfg(n_layers=1, attention__pattern="sliding_window", attention__window=4), rngs=nnx.Rngs(3))
    tokens = _tokens(3)
    base = _logits(model, tokens)
    far = _logits(model, tokens.at[0, 5].set((tokens[0, 5] + 1) % 64))  # query 12 sees keys 9..12 only
    np.testing.assert_allclose(far[0, 12], base[0, 12], rtol=1e-5, atol=1e-5)
    assert not np.allclose(far[0, 6], base[0, 6])


def test_encoder_padding_and_cross_attention_masks():
    model = build_model(cfg(arch="encoder_decoder", position__kind="t5"), rngs=nnx.Rngs(4))
    enc, dec = _tokens(4, length=12), _tokens(5, length=8)
    valid = jnp.asarray([[1] * 9 + [0] * 3], bool)
    base = np.asarray(model(enc, dec, valid))
    changed = np.asarray(model(enc.at[0, 10].set((enc[0, 10] + 1) % 64), dec, valid))
    np.testing.assert_allclose(changed, base, rtol=1e-5, atol=1e-5)  # padding never reaches the decoder
    seen = np.asarray(model(enc.at[0, 3].set((enc[0, 3] + 1) % 64), dec, valid))
    assert not np.allclose(seen, base)
    later = np.asarray(model(enc, dec.at[0, 5].set((dec[0, 5] + 1) % 64), valid))
    np.testing.assert_allclose(later[0, :5], base[0, :5], rtol=1e-5, atol=1e-5)  # the decoder is causal


def _layernorm(x, norm, eps):
    """numpy LayerNorm with the module's own scale and bias (float64)."""
    x = np.asarray(x, np.float64)
    y = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
    y = y * np.asarray(norm.scale[...], np.float64)
    return y + np.asarray(norm.bias[...], np.float64) if norm.bias is not None else y


_apply = nnx.jit(lambda module, x: module(x))  # a module on its own (eager calls dispatch many small ops)


def _deepnorm_reference(block, x, alpha, eps, mixers_zeroed=False):
    """DeepNorm block, numpy: x <- LN(alpha x + f(x)) for each sublayer f in turn, where f is the
    block's own sublayer applied to that sublayer's input (causal self-attention at positions 0..L-1, the
    FFN). With `mixers_zeroed` the attention sublayers' output projections are 0, so f = 0 for them."""
    x = np.asarray(x, np.float64)
    if mixers_zeroed:
        x = _layernorm(alpha * x, block.mixer_norm, eps)
        if block.cross is not None:
            x = _layernorm(alpha * x, block.cross_norm, eps)
    else:
        x = _layernorm(alpha * x + np.asarray(_apply(block.mixer, jnp.asarray(x, jnp.float32)), np.float64),
                       block.mixer_norm, eps)
    return _layernorm(alpha * x + np.asarray(_apply(block.ffn, jnp.asarray(x, jnp.float32)), np.float64),
                      block.ffn_norm, eps)


def _layer(stack, i):
    """Layer i of a stacked (scanned) layer stack, as a standalone Block."""
    graphdef, state = nnx.split(stack)
    return nnx.merge(graphdef, jax.tree.map(lambda a: jnp.asarray(np.asarray(a)[i]), state))


def test_deepnorm_constants_and_initialisation():
    # DeepNet Table 1 (Wang et al. 2022)
    assert deepnorm_constants("decoder", 0, 6, "decoder") == pytest.approx(((2 * 6) ** 0.25, (8 * 6) ** -0.25))
    assert deepnorm_constants("encoder", 6, 0, "encoder") == pytest.approx(((2 * 6) ** 0.25, (8 * 6) ** -0.25))
    enc = deepnorm_constants("encoder_decoder", 6, 6, "encoder")
    assert enc == pytest.approx((0.81 * (6**4 * 6) ** (1 / 16), 0.87 * (6**4 * 6) ** (-1 / 16)))
    assert deepnorm_constants("encoder_decoder", 6, 6, "decoder") == pytest.approx(((3 * 6) ** 0.25, (12 * 6) ** -0.25))
    config = cfg(d_model=64, d_ff=256, n_heads=4, n_kv_heads=4, norm__placement="deepnorm", norm__kind="layernorm",
                 init="normal", init_std=0.05)
    alpha, beta = (2 * 2) ** 0.25, (8 * 2) ** -0.25  # decoder-only, N = 2 layers
    block = Block(config, deepnorm=deepnorm_constants("decoder", 2, 2, "decoder"), rngs=nnx.Rngs(0))
    for name, expected in [("mixer.query", 0.05), ("mixer.value", 0.05 * beta), ("mixer.out", 0.05 * beta),
                           ("ffn.up", 0.05 * beta), ("ffn.down", 0.05 * beta)]:
        module, attr = name.split(".")
        std = float(np.std(np.asarray(getattr(getattr(block, module), attr)[...])))
        assert std == pytest.approx(expected, rel=0.08), name
    # the residual is norm(alpha x + f(x)) with the block's own sublayers f (attention, then the FFN)
    x = jax.random.normal(jax.random.key(0), (1, 5, 64))
    y = np.asarray(_apply(block, x))
    np.testing.assert_allclose(y, _deepnorm_reference(block, x, alpha, config.norm.eps), rtol=1e-4, atol=1e-4)
    for wrong in (1.0, 10.0):  # the comparison sees alpha
        assert np.abs(y - _deepnorm_reference(block, x, wrong, config.norm.eps)).max() > 1e-2


@pytest.mark.parametrize("arch", ["decoder", "encoder_decoder"])
def test_deepnorm_models_use_the_alpha_of_table_1(arch):
    """Every layer of a built model computes LN(alpha x + f(x)) with DeepNet's alpha for its place
    (Wang et al. 2022, arXiv:2203.00555, Table 1): decoder-only (2N)^(1/4); encoder-decoder with N encoder
    and M decoder layers: encoder 0.81 (N^4 M)^(1/16), decoder (3M)^(1/4)."""
    N, M = 3, 2  # encoder-decoder: N != M, so swapping them changes both alphas
    config = cfg(norm__placement="deepnorm", norm__kind="layernorm", init="normal", init_std=0.3, arch=arch, n_layers=M,
                 n_encoder_layers=N if arch == "encoder_decoder" else 0,
                 position__kind="t5" if arch == "encoder_decoder" else "rope")
    model = build_model(config, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (1, 6, 32))
    pos = masks.default_positions(1, 6)
    if arch == "decoder":
        stacks = [(model.blocks, (2 * M) ** 0.25, None)]
    else:
        context = jax.random.normal(jax.random.key(2), (1, 4, 32))
        stacks = [(model.encoder, 0.81 * (N**4 * M) ** (1 / 16), LayerInputs(positions=pos, causal=False,
                                                                               mask_kind="bidirectional")),
                  (model.decoder, (3 * M) ** 0.25, LayerInputs(positions=pos, mask=masks.causal(pos, pos),
                                                              mask_kind="causal", context=context))]
    for stack, alpha, inputs in stacks:
        run = nnx.jit(lambda block, x, inputs=inputs: block(x, inputs))
        for i in range(jax.tree.leaves(nnx.state(stack))[0].shape[0]):
            block = _layer(stack, i)
            zeroed = inputs is not None  # encoder-decoder: attention outputs zeroed, only the FFN's f(x) != 0
            if zeroed:
                block.mixer.out[...] = jnp.asarray(np.zeros(block.mixer.out.shape, np.float32))
                if block.cross is not None:
                    block.cross.out[...] = jnp.asarray(np.zeros(block.cross.out.shape, np.float32))
            y = np.asarray(run(block, x))
            want = _deepnorm_reference(block, x, alpha, config.norm.eps, mixers_zeroed=zeroed)
            np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4, err_msg=f"{arch} layer {i}")
            assert np.abs(y - _deepnorm_reference(block, x, 1.0, config.norm.eps, zeroed)).max() > 1e-2


def test_rezero_is_the_identity_at_initialisation():
    config = cfg(norm__placement="rezero")
    block = Block(config, rngs=nnx.Rngs(0))
    assert float(block.gate[...]) == 0.0
    x = jax.random.normal(jax.random.key(1), (2, 7, 32))
    np.testing.assert_array_equal(np.asarray(block(x)), np.asarray(x))
    model = build_model(config, rngs=nnx.Rngs(0))  # no norms anywhere: logits = E[tokens] E^T
    tokens = _tokens(6)
    table = np.asarray(model.embed[...])
    np.testing.assert_allclose(_logits(model, tokens)[0], table[np.asarray(tokens[0])] @ table.T, rtol=1e-5,
                               atol=1e-5)


def _qkv(seed, B=2, Lq=L, N=4, K=2, H=8):
    keys = jax.random.split(jax.random.key(seed), 3)
    return (jax.random.normal(keys[0], (B, Lq, N, H)), jax.random.normal(keys[1], (B, Lq, K, H)),
            jax.random.normal(keys[2], (B, Lq, K, H)))


def test_plain_and_xla_kernels_agree_with_masks_and_biases():
    q, k, v = _qkv(0)
    pos = masks.default_positions(2, L)
    mask = masks.combine(masks.causal(pos, pos), masks.document(jnp.asarray([[1] * 7 + [2] * 9] * 2),
                                                                jnp.asarray([[1] * 7 + [2] * 9] * 2)))
    bias = jax.random.normal(jax.random.key(9), (1, 4, L, L))
    a = kernels.plain(q, k, v, mask=mask, bias=bias)
    b = kernels.KERNELS["xla"](q, k, v, mask=mask, bias=bias)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("mask_kind, window", [("causal", 0), ("sliding_window", 5), ("bidirectional", 0)])
def test_splash_kernel_in_interpret_mode_matches_plain(mask_kind, window):
    q, k, v = _qkv(1, B=1, Lq=128, N=2, K=1, H=16)
    pos = masks.default_positions(1, 128)
    mask = {"causal": masks.causal(pos, pos), "sliding_window": masks.sliding_window(pos, pos, window),
            "bidirectional": None}[mask_kind]
    got = kernels.splash(q, k, v, mask_kind=mask_kind, window=window, interpret=True)
    want = kernels.plain(q, k, v, mask=mask)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-4, atol=2e-4)


def test_kernel_choice_and_clear_refusals():
    from lmx.errors import ConfigError

    causal = kernels.Request(mask="causal")
    assert kernels.choose_kernel("auto", causal, "cpu") == "xla"
    assert kernels.choose_kernel("auto", causal, "tpu") == "splash"
    assert kernels.choose_kernel("auto", kernels.Request(mask="dynamic"), "tpu") == "xla"  # falls back
    assert kernels.choose_kernel("auto", kernels.Request(mask="causal", sixteen_bit=True), "gpu") == "cudnn"
    assert kernels.choose_kernel("auto", kernels.Request(mask="causal", shaw=True), "gpu") == "plain"
    with pytest.raises(ConfigError, match="splash.*bias"):
        kernels.choose_kernel("splash", kernels.Request(mask="causal", has_bias=True), "tpu")
    with pytest.raises(ConfigError, match="splash needs a TPU"):
        kernels.choose_kernel("splash", causal, "cpu")
    with pytest.raises(ConfigError, match="cuDNN attention needs a GPU"):
        kernels.choose_kernel("cudnn", causal, "cpu")


@pytest.mark.parametrize("variant", [
    dict(arch="encoder_decoder", position__kind="t5", n_encoder_layers=3),
    dict(arch="encoder", position__kind="learned", norm__kind="layernorm", norm__bias=False),
    dict(tie_embeddings=False, attention__qk_norm=True, position__kind="shaw", attention__kernel="plain"),
    dict(layer_pattern="AMM", n_layers=3, ffn__activation="glu"),
    dict(norm__placement="rezero", ffn__activation="gelu_tanh"),
    dict(position__kind="base_n", position__base_n__base=3, ffn__activation="reglu"),
])
def test_param_count_is_exact(variant):
    config = cfg(**variant)
    model = nnx.eval_shape(lambda: build_model(config, rngs=nnx.Rngs(0)))
    assert param_count(config) == sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model)))


def test_incompatible_settings_name_both():
    from lmx.config import Config
    from lmx.errors import ConfigError

    cases = [
        (["model.position.kind=alibi", "model.attention.kernel=splash"], "position.kind=alibi"),
        (["model.position.kind=shaw", "model.attention.kernel=xla"], "position.kind=shaw"),
        (["model.attention.kind=linear", "model.position.kind=rope"], "attention.kind=linear"),
        (["model.attention.pattern=sliding_window", "model.attention.window=300"], "data.seq_len"),
        (["model.arch=encoder"], "<|mask|>"),
        (["model.arch=encoder_decoder"], "data.num_sentinels"),
        (["model.arch=encoder", "model.attention.pattern=sliding_window", "model.attention.window=4",
          "data.special_tokens=[\"<|mask|>\"]"], "arch=encoder"),
        (["model.position.kind=learned", "data.seq_len=512"], "model.max_seq_len"),
        (["model.layer_pattern=AM", "model.arch=encoder", "data.special_tokens=[\"<|mask|>\"]"], "arch=encoder"),
    ]
    for overrides, words in cases:
        with pytest.raises(ConfigError, match=words.replace("|", "\\|").replace("<", "<")):
            Config().with_overrides(overrides)
