"""Masks against dense NumPy definitions: no query ever sees a forbidden key."""

import itertools

import jax.numpy as jnp
import numpy as np

from lmx.nn import masks


def dense(rule, L):
    return np.array([[rule(i, j) for j in range(L)] for i in range(L)])


def _mask(array):
    return np.asarray(array)[0, 0]


L = 24
POS = jnp.arange(L)[None]


def test_causal_and_bidirectional():
    np.testing.assert_array_equal(_mask(masks.causal(POS, POS)), dense(lambda i, j: j <= i, L))
    assert _mask(masks.bidirectional(POS, POS)).all()


def test_sliding_window():
    for window in (1, 3, 8):
        want = dense(lambda i, j, w=window: j <= i and i - j < w, L)
        np.testing.assert_array_equal(_mask(masks.sliding_window(POS, POS, window)), want)


def test_block_sparse_never_exceeds_its_pattern():
    for window, stride, n_global in itertools.product((2, 4), (3, 5), (0, 2)):
        got = _mask(masks.block_sparse(POS, POS, window, stride, n_global))
        want = dense(lambda i, j, w=window, s=stride, g=n_global: j <= i and (i - j < w or j % s == s - 1
                                                                                or j < g or i < g), L)
        np.testing.assert_array_equal(got, want)
        assert not (got & ~dense(lambda i, j: j <= i, L)).any()  # never a future key


def test_prefix_lm_is_bidirectional_in_the_prefix_and_causal_after():
    prefix = jnp.asarray([5, 0])
    got = np.asarray(masks.prefix_lm(jnp.broadcast_to(POS, (2, L)), jnp.broadcast_to(POS, (2, L)), prefix))
    np.testing.assert_array_equal(got[0, 0], dense(lambda i, j: j < 5 or j <= i, L))
    np.testing.assert_array_equal(got[1, 0], dense(lambda i, j: j <= i, L))


def test_document_and_padding():
    seg = jnp.asarray([[1, 1, 1, 2, 2, 3]])
    got = np.asarray(masks.document(seg, seg))[0, 0]
    s = np.asarray(seg[0])
    np.testing.assert_array_equal(got, s[:, None] == s[None, :])
    pad = np.asarray(masks.padding(jnp.asarray([[1, 1, 0]])))
    assert pad.shape == (1, 1, 1, 3) and pad[0, 0, 0].tolist() == [True, True, False]


def test_combine_and_bias():
    combined = masks.combine(masks.causal(POS, POS), None, masks.sliding_window(POS, POS, 2))
    np.testing.assert_array_equal(_mask(combined), dense(lambda i, j: j <= i and i - j < 2, L))
    bias = np.asarray(masks.as_bias(combined))
    assert (bias[combined] == 0).all() and (bias[~np.asarray(combined)] < -1e30).all()
    assert masks.combine(None, None) is None
