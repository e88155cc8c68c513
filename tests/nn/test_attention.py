import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmx import registry
from lmx.nn import ATTENTION_IMPLS, Attention, logical_names

from . import reference as ref
from .helpers import primitive_eqns

B, L, D = 2, 16, 32


def _x(seed=0):
    return np.random.default_rng(seed).normal(size=(B, L, D)).astype(np.float32)


def _weights(attn):
    return [np.asarray(p[...], np.float64) for p in (attn.query, attn.key, attn.value, attn.out)]


def _positions(restart_at=None):
    pos = np.tile(np.arange(L), (B, 1))
    if restart_at is not None:
        pos[:, restart_at:] -= restart_at
    return pos.astype(np.int32)


@pytest.mark.parametrize("position", ["rope", "none"])
def test_mha_matches_numpy(position):
    attn = Attention(D, 4, 4, position=position, init_std=0.3, rngs=nnx.Rngs(0))
    x, pos = _x(), _positions()
    expected = ref.mha(x, *_weights(attn), positions=pos, use_rope=position == "rope")
    got = attn(jnp.asarray(x), jnp.asarray(pos))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_segment_ids_match_numpy_masked_attention():
    attn = Attention(D, 4, 4, init_std=0.3, rngs=nnx.Rngs(1))
    x, pos = _x(1), _positions(restart_at=5)
    seg = np.where(np.arange(L) < 5, 0, 1)[None].repeat(B, 0).astype(np.int32)
    expected = ref.mha(x, *_weights(attn), positions=pos, segment_ids=seg)
    got = attn(jnp.asarray(x), jnp.asarray(pos), jnp.asarray(seg))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n_kv_heads", [1, 2])
def test_gqa_equals_mha_with_repeated_kv_heads(n_kv_heads):
    n_heads = 4
    gqa = Attention(D, n_heads, n_kv_heads, init_std=0.3, rngs=nnx.Rngs(2))
    mha = Attention(D, n_heads, n_heads, rngs=nnx.Rngs(3))
    group = n_heads // n_kv_heads
    mha.query[...] = gqa.query[...]
    mha.out[...] = gqa.out[...]
    # query head n reads kv head n // group
    mha.key[...] = jnp.repeat(gqa.key[...], group, axis=1)
    mha.value[...] = jnp.repeat(gqa.value[...], group, axis=1)
    x, pos = jnp.asarray(_x(2)), jnp.asarray(_positions())
    np.testing.assert_allclose(gqa(x, pos), mha(x, pos), rtol=1e-5, atol=1e-5)
    # and both equal the numpy reference with the repeated weights
    np.testing.assert_allclose(
        gqa(x, pos), ref.mha(_x(2), *_weights(mha), positions=_positions()), rtol=1e-4, atol=1e-4
    )


def test_parameter_shapes_and_names():
    attn = Attention(D, 4, 2, head_dim=12, rngs=nnx.Rngs(0))
    assert attn.query.shape == (D, 4, 12) and attn.key.shape == (D, 2, 12)
    assert attn.value.shape == (D, 2, 12) and attn.out.shape == (4, 12, D)
    assert logical_names(attn.query) == ("embed", "heads", "head_dim")
    assert logical_names(attn.key) == logical_names(attn.value) == ("embed", "kv_heads", "head_dim")
    assert logical_names(attn.out) == ("heads", "head_dim", "embed")
    assert attn(jnp.ones((1, 3, D))).shape == (1, 3, D)


def _numpy_gqa_attention(x, wq, wk, wv, wo, positions):
    """Causal softmax attention, float64: RoPE on q and k, query head n reads kv head n // (N / K),
    softmax(q k^T / sqrt(H)) over keys j <= i, then the output projection."""
    q, k, v = (np.einsum("bld,dnh->blnh", x, w) for w in (wq, wk, wv))
    q, k = ref.rope(q, positions), ref.rope(k, positions)
    group = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, group, axis=2), np.repeat(v, group, axis=2)
    scores = np.einsum("binh,bjnh->bnij", q, k) / np.sqrt(q.shape[-1])
    scores = np.where(np.tril(np.ones((x.shape[1], x.shape[1]), bool)), scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("binh,nhd->bid", np.einsum("bnij,bjnh->binh", probs, v), wo)


def test_impl_registry_and_auto_matches_numpy(monkeypatch):
    from lmx.nn import attention_kernels as kernels

    assert set(ATTENTION_IMPLS) == {"plain", "xla", "cudnn", "splash", "auto"}
    assert ATTENTION_IMPLS is registry.ATTENTION_KERNELS  # the table config validation reads
    ran = []  # the kernels the layer calls
    for name, kernel in list(kernels.KERNELS.items()):
        monkeypatch.setitem(kernels.KERNELS, name,
                            lambda *a, name=name, kernel=kernel, **kw: ran.append(name) or kernel(*a, **kw))
    splash = kernels.splash
    monkeypatch.setattr(kernels, "splash", lambda *a, **kw: ran.append("splash") or splash(*a, **kw))
    auto = Attention(D, 4, 2, impl="auto", init_std=0.3, rngs=nnx.Rngs(0))
    x, pos = _x(), _positions()
    got = np.asarray(auto(jnp.asarray(x), jnp.asarray(pos)))
    # float32 causal attention: auto runs XLA's fused attention on CPU and GPU (cuDNN's needs 16-bit
    # compute), splash on TPU
    assert ran == [{"tpu": "splash"}.get(jax.default_backend(), "xla")]
    np.testing.assert_allclose(got, _numpy_gqa_attention(x, *_weights(auto), pos), rtol=1e-4, atol=1e-4)


AUTO_CASES = [
    ("cpu", dict(mask="causal"), "xla"),
    ("cpu", dict(mask="causal", sixteen_bit=True), "xla"),
    ("gpu", dict(mask="causal"), "xla"),  # cuDNN fused attention needs float16/bfloat16
    ("gpu", dict(mask="causal", sixteen_bit=True), "cudnn"),
    ("cuda", dict(mask="dynamic", has_bias=True, sixteen_bit=True), "cudnn"),
    ("tpu", dict(mask="causal"), "splash"),
    ("tpu", dict(mask="sliding_window", window=4), "splash"),
    ("tpu", dict(mask="bidirectional"), "splash"),
    ("tpu", dict(mask="dynamic"), "xla"),  # per-example masks: splash has static ones only
    ("tpu", dict(mask="causal", has_bias=True), "xla"),  # ALiBi/T5 biases: splash adds none
    ("tpu", dict(mask="causal", shaw=True), "plain"),  # Shaw's value terms: only the plain kernel
    ("gpu", dict(mask="causal", shaw=True, sixteen_bit=True), "plain"),
    ("cpu", dict(mask="causal", shaw=True), "plain"),
]


@pytest.mark.parametrize("backend, request_, expected", AUTO_CASES,
                         ids=[f"{b}-{'-'.join(f'{k}={v}' for k, v in r.items())}" for b, r, _ in AUTO_CASES])
def test_auto_resolves_per_backend_and_request(backend, request_, expected):
    from lmx.nn import attention_kernels as kernels

    assert kernels.choose_kernel("auto", kernels.Request(**request_), backend) == expected


def test_bf16_compute_close_to_fp32():
    kw = dict(init_std=0.3, rngs=nnx.Rngs(4))
    fp32 = Attention(D, 4, 2, **kw)
    bf16 = Attention(D, 4, 2, compute_dtype=jnp.bfloat16, init_std=0.3, rngs=nnx.Rngs(4))
    x = jnp.asarray(_x(3))
    y32, y16 = fp32(x), bf16(x)
    assert y16.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(y16)))
    np.testing.assert_allclose(np.asarray(y16, np.float32), y32, rtol=0.05, atol=0.05)


def test_bf16_compute_softmax_in_float32():
    attn = Attention(D, 4, 2, compute_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    jaxpr = jax.make_jaxpr(lambda x: attn(x))(jnp.ones((1, 4, D), jnp.bfloat16))
    exp_dtypes = [v.aval.dtype for eqn in primitive_eqns(jaxpr.jaxpr, "exp") for v in eqn.outvars]
    assert exp_dtypes and all(d == jnp.float32 for d in exp_dtypes), exp_dtypes
