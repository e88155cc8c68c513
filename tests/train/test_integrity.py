"""Array checksums (lmx.train.integrity): any one changed word is caught, positions count, every dtype of a
train state is covered, and the digest equals the formula written out in NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmx.errors import CheckpointError
from lmx.train.integrity import leaf_path, tree_checksums, verify


def _fmix32(x):
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x85EBCA6B)
    x = x ^ (x >> np.uint32(13))
    x = x * np.uint32(0xC2B2AE35)
    return x ^ (x >> np.uint32(16))


def _reference(array) -> str:
    """The documented digest in NumPy: t_i = fmix32(w_i ^ (i * 0x9E3779B9 + 0x243F6A88)), (sum t, sum t (2i+1))."""
    words = np.ascontiguousarray(array).view(np.uint32).ravel()
    index = np.arange(words.size, dtype=np.uint32)
    with np.errstate(over="ignore"):
        terms = _fmix32(words ^ (index * np.uint32(0x9E3779B9) + np.uint32(0x243F6A88)))
        first = int(terms.sum(dtype=np.uint32))
        second = int((terms * (index * np.uint32(2) + np.uint32(1))).sum(dtype=np.uint32))
    return f"{first:08x}{second:08x}"


def test_digest_is_the_documented_formula():
    x = np.random.default_rng(0).standard_normal((7, 5, 3)).astype(np.float32)
    assert tree_checksums({"x": jnp.asarray(x)})["x"] == _reference(x)


def test_any_single_changed_word_and_a_swap_are_caught():
    x = np.random.default_rng(1).standard_normal((16, 8)).astype(np.float32)
    base = tree_checksums({"x": x})["x"]
    for flat in range(0, x.size, 7):
        y = x.copy().ravel()
        y.view(np.uint32)[flat] ^= np.uint32(1 << (flat % 32))  # one bit of one word
        assert tree_checksums({"x": y.reshape(x.shape)})["x"] != base
    swapped = x.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    assert tree_checksums({"x": swapped})["x"] != base


def test_every_dtype_of_a_train_state_is_covered_and_paths_are_named():
    tree = {"params": {"w": jnp.ones((3, 4), jnp.bfloat16), "b": jnp.zeros((4,), jnp.float16)},
            "step": jnp.asarray(3, jnp.int32), "rng": jax.random.key_data(jax.random.key(0)),
            "mask": jnp.asarray([True, False]), "small": jnp.arange(5, dtype=jnp.int8)}
    sums = tree_checksums(tree)
    assert sorted(sums) == ["mask", "params.b", "params.w", "rng", "small", "step"]
    assert all(len(digest) == 16 for digest in sums.values())
    changed = dict(tree, small=jnp.arange(5, dtype=jnp.int8).at[2].set(9))
    with pytest.raises(CheckpointError, match="array small does not match its saved checksum"):
        verify(changed, sums, "checkpoint step 1")
    verify(tree, sums, "checkpoint step 1")


def test_nnx_variable_paths_leave_out_their_value():
    from flax import nnx

    state = nnx.state(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
    paths = [leaf_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
    assert sorted(paths) == ["bias", "kernel"]
    full = [leaf_path(p, variable_value=True) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
    assert sorted(full) == ["bias.value", "kernel.value"]
