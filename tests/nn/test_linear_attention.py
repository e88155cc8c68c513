"""Linear attention against its quadratic form written in numpy, causality, and O(L) memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmx.nn import logical_partition_specs
from lmx.nn.attention import LinearAttention
from lmx.nn.linear_attention import (
    FEATURE_MAPS,
    bidirectional_linear_attention,
    causal_linear_attention,
)

PHI = {
    "elu1": lambda x: np.where(x > 0, x + 1.0, np.exp(x)),
    "relu": lambda x: np.maximum(x, 0.0),
}
EPS = 1e-6


def _qkv(seed, B=2, L=12, N=4, K=4, H=8):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(B, L, N, H)).astype(np.float32),
        rng.normal(size=(B, L, K, H)).astype(np.float32),
        rng.normal(size=(B, L, K, H)).astype(np.float32),
    )


def quadratic_reference(q, k, v, feature_map, causal, k_valid=None, segment_ids=None):
    """o_i = sum_j m_ij phi(q_i).phi(k_j) v_j / (sum_j m_ij phi(q_i).phi(k_j) + eps), in float64."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    B, L, N, _ = q.shape
    group = N // k.shape[2]
    k, v = np.repeat(k, group, axis=2), np.repeat(v, group, axis=2)
    phi = PHI[feature_map]
    sim = np.einsum("binh,bjnh->bnij", phi(q), phi(k))  # [B, N, L, L]
    mask = np.ones((B, L, L), bool)
    if causal:
        mask &= np.tril(np.ones((L, L), bool))
    if k_valid is not None:
        mask &= np.asarray(k_valid, bool)[:, None, :]
    if segment_ids is not None:
        seg = np.asarray(segment_ids)
        mask &= seg[:, :, None] == seg[:, None, :]
    sim = sim * mask[:, None]
    num = np.einsum("bnij,bjnh->binh", sim, v)
    den = sim.sum(-1).transpose(0, 2, 1)[..., None]
    return num / (den + EPS)


@pytest.mark.parametrize("feature_map", sorted(FEATURE_MAPS))
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
@pytest.mark.parametrize("chunk_size", [None, 5])
def test_causal_matches_quadratic_form(feature_map, kv_heads, chunk_size):
    q, k, v = _qkv(0, K=kv_heads)
    out = causal_linear_attention(q, k, v, feature_map, EPS, chunk_size=chunk_size)
    assert out.shape == q.shape and out.dtype == jnp.float32
    np.testing.assert_allclose(
        out, quadratic_reference(q, k, v, feature_map, causal=True), rtol=2e-4, atol=2e-5
    )


@pytest.mark.parametrize("feature_map", sorted(FEATURE_MAPS))
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_bidirectional_matches_quadratic_form(feature_map, kv_heads):
    q, k, v = _qkv(1, K=kv_heads)
    out = bidirectional_linear_attention(q, k, v, feature_map, EPS)
    np.testing.assert_allclose(
        out, quadratic_reference(q, k, v, feature_map, causal=False), rtol=2e-4, atol=2e-5
    )


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_key_mask_and_segments(chunk_size):
    q, k, v = _qkv(2, L=16, K=2)
    rng = np.random.default_rng(3)
    k_valid = rng.random((2, 16)) > 0.3
    k_valid[:, 0] = True
    # contiguous segments, boundaries both inside and on chunk edges
    seg = np.array([[0] * 3 + [1] * 5 + [2] * 8, [0] * 4 + [1] * 4 + [2] * 1 + [3] * 7], np.int32)
    out = causal_linear_attention(q, k, v, "elu1", EPS, k_valid, seg, chunk_size)
    expected = quadratic_reference(q, k, v, "elu1", True, k_valid, seg)
    np.testing.assert_allclose(out, expected, rtol=2e-4, atol=2e-5)
    out = bidirectional_linear_attention(q, k, v, "relu", EPS, k_valid)
    np.testing.assert_allclose(
        out, quadratic_reference(q, k, v, "relu", False, k_valid), rtol=2e-4, atol=2e-5
    )


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_causality(chunk_size):
    q, k, v = _qkv(4, L=16)
    out = causal_linear_attention(q, k, v, chunk_size=chunk_size)
    t = 9
    q2, k2, v2 = (a.copy() for a in (q, k, v))
    for a in (q2, k2, v2):
        a[:, t:] = np.random.default_rng(5).normal(size=a[:, t:].shape)
    out2 = causal_linear_attention(q2, k2, v2, chunk_size=chunk_size)
    np.testing.assert_array_equal(np.asarray(out)[:, :t], np.asarray(out2)[:, :t])
    assert not np.allclose(np.asarray(out)[:, t:], np.asarray(out2)[:, t:])


def _all_shapes(jaxpr):
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            yield tuple(getattr(var.aval, "shape", ()))
        for value in eqn.params.values():  # scan / pjit / cond bodies
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if hasattr(sub, "eqns"):
                    yield from _all_shapes(sub)
                elif hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
                    yield from _all_shapes(sub.jaxpr)


@pytest.mark.parametrize("chunk_size", [None, 16])
def test_no_LxL_array(chunk_size):
    L, H = 64, 8
    q, k, v = (jnp.ones((1, L, 2, H)) for _ in range(3))
    fn = lambda q, k, v: causal_linear_attention(q, k, v, chunk_size=chunk_size)  # noqa: E731
    shapes = list(_all_shapes(jax.make_jaxpr(fn)(q, k, v).jaxpr))
    assert any(L in s for s in shapes)  # the walk does see the full-length arrays
    assert any(len(s) == 4 and s[-2:] == (H, H) for s in shapes)  # and the [B, N, H, H] state
    offenders = [s for s in shapes if sum(d == L for d in s) >= 2]
    assert not offenders, offenders
    # and no cumulative [L, H, H] state either
    assert not [s for s in shapes if L in s and list(s).count(H) >= 2], shapes


def test_module_bf16_and_specs():
    attn = LinearAttention(32, 4, 2, chunk_size=4, compute_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (2, 10, 32))
    y = nnx.jit(lambda m, x: m(x))(attn, x)
    assert y.shape == x.shape and y.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(y)))
    specs = logical_partition_specs(attn)
    assert specs["key"] == ("embed", "kv_heads", "head_dim") and specs["out"] == (
        "heads",
        "head_dim",
        "embed",
    )
    # chunked and token-by-token module forms agree (float32)
    a32 = LinearAttention(32, 4, 2, chunk_size=4, rngs=nnx.Rngs(0))
    y_chunk = nnx.jit(lambda m, x: m(x))(a32, x)
    a32.chunk_size = None
    np.testing.assert_allclose(y_chunk, nnx.jit(lambda m, x: m(x))(a32, x), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError):
        LinearAttention(32, 4, feature_map="softmax", rngs=nnx.Rngs(0))
