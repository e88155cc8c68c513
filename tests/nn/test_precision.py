"""Mixed precision: 16-bit operands, float32 sums (lmx.nn.precision and the plain attention kernel)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmx.nn import attention_kernels, precision

from .helpers import build, primitive_eqns, random_tokens, tiny_config

BF16_HALF_ULP = 2.0**-8  # round to nearest with 8 significant bits: relative error at most 2^-8


def _bf16(a: np.ndarray) -> np.ndarray:
    """`a` rounded to bfloat16, back as float64 (the values a bfloat16 operand holds)."""
    return np.asarray(jnp.asarray(np.asarray(a, np.float32), jnp.bfloat16), np.float64)


def test_float32_einsum_is_the_plain_einsum():
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(2, 3, 16)).astype(np.float32), rng.normal(size=(16, 8)).astype(np.float32)
    got = precision.einsum("bld,df->blf", x, w, jnp.float32)
    assert got.dtype == jnp.float32
    np.testing.assert_array_equal(got, jnp.einsum("bld,df->blf", x, w))


def test_bfloat16_einsum_is_the_exact_product_rounded_once():
    # 1024 positive terms near 1: a sum kept in bfloat16 (8 significant bits) stalls long before 1024
    # (spacing 4 at 512), so only a float32 accumulation lands within half a bfloat16 ulp of the exact sum.
    rng = np.random.default_rng(1)
    x = rng.uniform(0.5, 1.5, size=(4, 1024))
    w = rng.uniform(0.5, 1.5, size=(1024, 3))
    got = precision.einsum("ik,kj->ij", x, w, jnp.bfloat16)
    assert got.dtype == jnp.bfloat16
    exact = _bf16(x) @ _bf16(w)  # float64 product of the operands as bfloat16 holds them
    err = np.abs(np.asarray(got, np.float64) - exact) / np.abs(exact)
    assert err.max() <= BF16_HALF_ULP * (1 + 1e-3), err.max()


def _dot_dtypes(fn, *args):
    eqns = primitive_eqns(jax.make_jaxpr(fn)(*args).jaxpr, "dot_general")
    return [(tuple(v.aval.dtype for v in e.invars), e.outvars[0].aval.dtype) for e in eqns]


@pytest.mark.parametrize("layer_pattern", ["A", "MA"])
def test_bfloat16_model_sums_every_matmul_in_float32(layer_pattern):
    # attention__kernel=plain: the xla/cudnn kernels are jax.nn.dot_product_attention, with JAX's own dtypes
    config = tiny_config(param_dtype="bfloat16", compute_dtype="bfloat16", layer_pattern=layer_pattern,
                         attention__kernel="plain")
    model = build(config)
    dots = _dot_dtypes(model, random_tokens(0, 1, 8, model.config.vocab_size))
    assert len(dots) >= 7, dots  # q, k, v, scores, p.v, out, gate, up, down, logits (and the SSM's)
    sixteen_bit = [d for d in dots if jnp.dtype(jnp.bfloat16) in d[0]]
    assert sixteen_bit, dots  # the projections do take bfloat16 operands
    assert all(out == jnp.float32 for _, out in dots), dots


def test_plain_attention_uses_a_bfloat16_cache_as_it_is():
    B, L, N, K, H, S = 2, 3, 4, 2, 8, 10
    rng = np.random.default_rng(2)
    q = rng.normal(size=(B, L, N, H)).astype(np.float32)
    k = rng.normal(size=(B, K, S, H)).astype(np.float32)
    v = rng.normal(size=(B, K, S, H)).astype(np.float32)
    qb, vb = jnp.asarray(q, jnp.bfloat16), jnp.asarray(v, jnp.bfloat16)
    kb = jnp.asarray(k.transpose(0, 1, 3, 2), jnp.bfloat16)  # a key cache is [B, K, H, S]
    run = lambda q, k, v: attention_kernels.plain_parts(q, [(k, v)])
    # the cache is never widened: no convert of an array of its keys' or values' shape
    converts = primitive_eqns(jax.make_jaxpr(run)(qb, kb, vb).jaxpr, "convert_element_type")
    assert not [e for e in converts if e.invars[0].aval.shape in (kb.shape, vb.shape)], converts
    got = np.asarray(run(qb, kb, vb), np.float64)

    # numpy transcription of the contract: q / sqrt(H) and the probabilities rounded to bfloat16,
    # products exact, softmax in float64 (float32 in the kernel), the output rounded to bfloat16
    G = N // K
    qr = _bf16(_bf16(q).reshape(B, L, K, G, H) / math.sqrt(H))
    scores = np.einsum("blkgh,bksh->blkgs", qr, _bf16(k))
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    want = np.einsum("blkgs,bksh->blkgh", _bf16(probs), _bf16(v)).reshape(B, L, N, H)
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=2 * BF16_HALF_ULP, atol=2 * BF16_HALF_ULP * scale)
