"""Checksums of the arrays in a checkpoint: computed at save time, verified after every restore.

`tree_checksums(tree)` gives each array leaf a 64-bit digest of its bytes, keyed by its path
(`params.blocks.mixer.query`, `opt_state.1.0.mu.embed`, `step`). The digest is computed on the
devices that hold the array, by one jitted reduction over the whole tree, so it needs no gather to a
host, is the same on every process of a multi-host run, and does not depend on how the array is
sharded: a checkpoint written under one mesh verifies after a restore into another.

Digest of an array with n elements, viewed as unsigned words w_i (float32 -> uint32 bits; 16- and
8-bit types widened to uint32; 64-bit types as two words), all arithmetic mod 2^32:

    t_i = fmix32(w_i XOR (i * 0x9E3779B9 + 0x243F6A88))
    digest = (sum_i t_i, sum_i t_i * (2i + 1))

fmix32 is MurmurHash3's finaliser, a bijection of uint32, so changing any one word changes exactly
one term t_i and always changes the first sum; a change of several words goes unnoticed by both
sums with probability about 2^-64. Integer addition is exact and associative, so the sums do not
depend on the reduction order XLA picks for a given sharding. (A sha256 or crc32c over the array's
host bytes would need each array gathered to one host; TensorStore's per-chunk crc32c codec is not
exposed by Orbax.) Cost: one pass over the arrays' bytes on their devices; on one CPU core about
1 GB/s (benchmarks/checkpoint_verify.py), on accelerators bound by memory bandwidth.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding, PartitionSpec

from lmx.errors import CheckpointError

ALGORITHM = "lmx-fmix32-2sum-v1"


def leaf_path(path, variable_value: bool = False) -> str:
    """`params.blocks.mixer.query` for a jax key path; an nnx Variable's own `.value` is left out unless
    `variable_value` (Orbax's tree metadata names it: `params.blocks.mixer.query.value`)."""
    names = []
    for key in path:
        if isinstance(key, jax.tree_util.GetAttrKey):
            if key.name == "value" and not variable_value:
                continue
            names.append(key.name)
        elif isinstance(key, jax.tree_util.DictKey):
            names.append(str(key.key))
        elif isinstance(key, jax.tree_util.SequenceKey):
            names.append(str(key.idx))
        else:
            names.append(str(getattr(key, "key", key)))
    return ".".join(names)


def _fmix32(x):
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def _words(x):
    """The array's bits as uint32 words (64-bit types: a trailing axis of two words)."""
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    size = jnp.dtype(x.dtype).itemsize
    if size == 4:
        return lax.bitcast_convert_type(x, jnp.uint32)
    if size in (1, 2):
        return lax.bitcast_convert_type(x, jnp.uint8 if size == 1 else jnp.uint16).astype(jnp.uint32)
    if size == 8:
        return lax.bitcast_convert_type(x, jnp.uint32)
    raise TypeError(f"no checksum for dtype {x.dtype}")


def _digest(x):
    words = _words(x)
    index = jnp.zeros(words.shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(words.ndim)):  # the row-major flat index, built per axis (no reshape of a sharded array)
        index = index + lax.broadcasted_iota(jnp.uint32, words.shape, axis) * jnp.uint32(stride & 0xFFFFFFFF)
        stride *= words.shape[axis]
    terms = _fmix32(words ^ (index * jnp.uint32(0x9E3779B9) + jnp.uint32(0x243F6A88)))
    return jnp.stack([jnp.sum(terms, dtype=jnp.uint32),
                      jnp.sum(terms * (index * jnp.uint32(2) + jnp.uint32(1)), dtype=jnp.uint32)])


@functools.lru_cache(maxsize=32)
def _compiled(out_sharding):
    return jax.jit(lambda leaves: [_digest(x) for x in leaves], out_shardings=out_sharding)


def _replicated(leaves) -> NamedSharding | None:
    for leaf in leaves:
        sharding = getattr(leaf, "sharding", None)
        if isinstance(sharding, NamedSharding):
            return NamedSharding(sharding.mesh, PartitionSpec())
    return None


def tree_checksums(tree) -> dict[str, str]:
    """{path: 16 hex digits} for every array leaf of `tree` (jax or numpy arrays, any sharding)."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    paths = [leaf_path(path) for path, _ in flat]
    leaves = [leaf if isinstance(leaf, jax.Array) else jnp.asarray(leaf) for _, leaf in flat]
    if not leaves:
        return {}
    digests = _compiled(_replicated(leaves))(leaves)
    out = {}
    for path, digest in zip(paths, digests, strict=True):
        words = np.asarray(digest.addressable_data(0))
        out[path] = f"{int(words[0]):08x}{int(words[1]):08x}"
    return out


def mismatched(tree, expected: dict[str, str]) -> list[str]:
    """Paths of `tree`'s leaves whose digest differs from `expected` (leaves it does not list are skipped)."""
    actual = tree_checksums(tree)
    return [path for path, digest in actual.items() if path in expected and expected[path] != digest]


def verify(tree, expected: dict[str, str], where: str) -> None:
    """CheckpointError naming the first array of `tree` whose bytes differ from the saved checksum."""
    bad = mismatched(tree, expected)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise CheckpointError(f"{where}: array {bad[0]}{more} does not match its saved checksum: the checkpoint's "
                              "bytes changed after it was written (disk or copy damage)")
