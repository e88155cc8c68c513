"""Decoding caches for incremental inference, keyed by position.

A `DecodeCache` has C slots per sequence. Slot c of row b holds the keys and values (rotated, as the
attention computed them) of the token at position `positions_BxC[b, c]`, or nothing when that entry
is -1. A token at position p is written to slot p mod C, so:

    C >= every position          an ordinary preallocated cache (slot = position)
    C = window (sliding window)  a ring buffer: the slot of the token that has just left the window
                                 is reused (Mistral's rolling buffer cache, Jiang et al. 2023)

Because each slot carries its position, masks and relative position terms for the cached keys are
built by the same position-based functions as in training (lmx.nn.masks, ALiBi, T5, Shaw), each row
can sit at a different position (batches of prompts with different lengths), and discarding
tokens (speculative decoding) is setting positions back to -1. All layers share one position
array; per-layer entries are stacked on a leading `layers` axis, like the parameters:

    attention layer   {"k": [B, C, K, H], "v": [B, C, K, H]}    (K = n_kv_heads: GQA caches K heads)
    + cross-attention {"cross_k": [B, S, K, H], "cross_v": ...}  encoder states, projected once
    SSM layer         {"ssm": SSMCache}                          O(1) state (lmx.nn.ssm)
    layer group       a tuple of the above, one per entry of `model.layer_pattern`

Standalone: `cache = init_cache(config, batch, capacity)`; then
`logits, cache = model.extend(tokens_BxT, positions_BxT, cache, valid_BxT=..., fresh=True)` for the
prompt and `model.extend(next_Bx1, positions_Bx1, cache)` for every new token (lmx.decode does this
inside one compiled loop).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from lmx.config import ModelConfig
from lmx.nn.blocks import write_slots
from lmx.nn.params import dtype_of
from lmx.nn.ssm import SSMCache


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DecodeCache:
    positions_BxC: jax.Array  # int32 position held by each slot; -1 = empty
    layers: Any  # per-layer caches stacked on a leading layers axis (see the module docstring)
    context_valid_BxS: jax.Array | None = None  # encoder-decoder: real encoder tokens

    @property
    def capacity(self) -> int:
        return self.positions_BxC.shape[1]


def cache_capacity(config: ModelConfig, total_len: int, ring: bool = True) -> int:
    """Slots needed for sequences of up to `total_len` tokens: the window for sliding-window
    attention (a ring buffer, unless `ring=False`), else `total_len`."""
    if ring and config.attention_pattern == "sliding_window":
        return min(config.window, total_len)
    return total_len


def _layer_cache(config: ModelConfig, layer_type: str, batch: int, capacity: int, context_len: int,
                 cross: bool, dtype) -> dict:
    if layer_type == "M":
        inner = config.ssm_expand * config.d_model
        return {"ssm": SSMCache(conv_BxKm1xE=jnp.zeros((batch, config.ssm_conv - 1, inner), jnp.float32),
                                ssm_BxExN=jnp.zeros((batch, inner, config.ssm_state), jnp.float32))}
    kv_shape = (batch, capacity, config.n_kv_heads, config.resolved_head_dim)
    entry = {"k": jnp.zeros(kv_shape, dtype), "v": jnp.zeros(kv_shape, dtype)}
    if cross:
        context_shape = (batch, context_len, config.n_kv_heads, config.resolved_head_dim)
        entry["cross_k"], entry["cross_v"] = jnp.zeros(context_shape, dtype), jnp.zeros(context_shape, dtype)
    return entry


def init_cache(config: ModelConfig, batch: int, capacity: int, *, context_len: int = 0) -> DecodeCache:
    """An empty cache with `capacity` slots per row (and room for `context_len` encoder states when
    the model is an encoder-decoder)."""
    cross = config.arch == "encoder_decoder"
    pattern = "A" if cross else config.layer_pattern
    dtype = dtype_of(config.compute_dtype)
    entries = tuple(_layer_cache(config, t, batch, capacity, context_len, cross, dtype) for t in pattern)
    group = entries[0] if len(entries) == 1 else entries
    n_groups = config.n_layers // len(pattern)
    layers = jax.tree.map(lambda a: jnp.broadcast_to(a, (n_groups, *a.shape)), group)
    context_valid = jnp.ones((batch, context_len), bool) if cross else None
    return DecodeCache(positions_BxC=jnp.full((batch, capacity), -1, jnp.int32), layers=layers,
                       context_valid_BxS=context_valid)


def write_plan(positions_BxT: jax.Array, valid_BxT: jax.Array, capacity: int):
    """(slots_BxT, new key positions_BxT): each row writes its last `capacity` real tokens to slot
    position mod capacity; padding and older tokens get slot `capacity` (not written) and key position -1
    for padding (so it is never attended)."""
    key_positions_BxT = jnp.where(valid_BxT, positions_BxT, -1)
    newest_Bx1 = key_positions_BxT.max(axis=1, keepdims=True)
    written_BxT = valid_BxT & (positions_BxT > newest_Bx1 - capacity)
    slots_BxT = jnp.where(written_BxT, positions_BxT % capacity, capacity)
    return slots_BxT, key_positions_BxT


def updated_positions(cache: DecodeCache, positions_BxT, slots_BxT) -> jax.Array:
    return write_slots(cache.positions_BxC, positions_BxT.astype(jnp.int32), slots_BxT)


def forget_after(cache: DecodeCache, last_position_B: jax.Array) -> DecodeCache:
    """Drop every cached token whose position is beyond `last_position_B` (rejected draft tokens)."""
    positions = jnp.where(cache.positions_BxC > last_position_B[:, None], -1, cache.positions_BxC)
    return dataclasses.replace(cache, positions_BxC=positions)


def reorder(cache: DecodeCache, index_B: jax.Array) -> DecodeCache:
    """The cache rows taken in the order `index_B` (beam search keeps the surviving beams)."""
    layers = jax.tree.map(lambda a: jnp.take(a, index_B, axis=1), cache.layers)
    context_valid = None if cache.context_valid_BxS is None else cache.context_valid_BxS[index_B]
    return DecodeCache(positions_BxC=cache.positions_BxC[index_B], layers=layers,
                       context_valid_BxS=context_valid)


def run_stack_extend(config: ModelConfig, stack, x_BxTxD, inputs, layer_caches):
    """The stacked layers' incremental forward (a scan over layers and their caches, or a loop)."""
    from flax import nnx

    graphdef, state = nnx.split(stack)

    def body(x, layer):
        layer_state, layer_cache = layer
        return nnx.merge(graphdef, layer_state).extend(x, inputs, layer_cache)

    if config.scan_layers:
        return jax.lax.scan(body, x_BxTxD, (state, layer_caches))
    n_groups = jax.tree.leaves(state)[0].shape[0]
    outputs = []
    for i in range(n_groups):
        x_BxTxD, new_cache = body(x_BxTxD, jax.tree.map(lambda a, i=i: a[i], (state, layer_caches)))
        outputs.append(new_cache)
    return x_BxTxD, jax.tree.map(lambda *a: jnp.stack(a), *outputs)
