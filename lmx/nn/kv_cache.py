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

    attention layer   {"k": [B, K, H, C], "v": [B, K, C, H]}    (K = n_kv_heads: GQA caches K heads;
                                                                kv-head-major; keys transposed, so
                                                                q.k and p.v are both plain matrix
                                                                products: no transposes, no repacking)
    linear attention  {"S": [B, N, H, H], "z": [B, N, H]}       running sums of phi(k) v^T and phi(k)
    + cross-attention {"cross_k": [B, K, H, S], "cross_v": [B, K, S, H]}  encoder states, projected once
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
from lmx.nn.params import dtype_of
from lmx.nn.ssm import SSMCache


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DecodeCache:
    positions_BxC: jax.Array  # int32 position held by each slot; -1 = empty
    layers: Any  # per-layer caches stacked on a leading layers axis, or a list of them (per_layer)
    context_valid_BxS: jax.Array | None = None  # encoder-decoder: real encoder tokens
    per_layer: bool = dataclasses.field(default=False, metadata={"static": True})

    @property
    def capacity(self) -> int:
        return self.positions_BxC.shape[1]


def cache_capacity(config: ModelConfig, total_len: int, ring: bool = True) -> int:
    """Slots needed for sequences of up to `total_len` tokens: the window for sliding-window
    attention (a ring buffer, unless `ring=False`), else `total_len`."""
    if ring and config.attention.pattern == "sliding_window":
        return min(config.attention.window, total_len)
    return total_len


def _layer_cache(config: ModelConfig, layer_type: str, batch: int, capacity: int, context_len: int,
                 cross: bool, dtype) -> dict:
    if layer_type == "M":
        inner = config.ssm.expand * config.d_model
        return {"ssm": SSMCache(conv_BxKm1xE=jnp.zeros((batch, config.ssm.conv - 1, inner), jnp.float32),
                                ssm_BxExN=jnp.zeros((batch, inner, config.ssm.state), jnp.float32))}
    if config.attention.kind == "linear":  # the recurrent state of linear attention: O(1) per token
        N, H = config.n_heads, config.resolved_head_dim
        return {"S": jnp.zeros((batch, N, H, H), jnp.float32), "z": jnp.zeros((batch, N, H), jnp.float32)}
    K, H = config.n_kv_heads, config.resolved_head_dim
    entry = {"k": jnp.zeros((batch, K, H, capacity), dtype), "v": jnp.zeros((batch, K, capacity, H), dtype)}
    if cross:
        entry["cross_k"] = jnp.zeros((batch, K, H, context_len), dtype)
        entry["cross_v"] = jnp.zeros((batch, K, context_len, H), dtype)
    return entry


def init_cache(config: ModelConfig, batch: int, capacity: int, *, context_len: int = 0,
               per_layer: bool = False) -> DecodeCache:
    """An empty cache with `capacity` slots per row (and room for `context_len` encoder states when
    the model is an encoder-decoder). `per_layer` keeps one buffer per layer group (a list) instead
    of one stacked buffer: the layout of an unrolled decode step (`unstack_layers`), in which every
    layer reads and updates its own buffers in place."""
    cross = config.arch == "encoder_decoder"
    pattern = "A" if cross else config.layer_pattern
    dtype = dtype_of(config.compute_dtype)
    entries = tuple(_layer_cache(config, t, batch, capacity, context_len, cross, dtype) for t in pattern)
    group = entries[0] if len(entries) == 1 else entries
    n_groups = config.n_layers // len(pattern)
    if per_layer:
        layers = [jax.tree.map(jnp.zeros_like, group) for _ in range(n_groups)]
    else:
        layers = jax.tree.map(lambda a: jnp.broadcast_to(a, (n_groups, *a.shape)), group)
    context_valid = jnp.ones((batch, context_len), bool) if cross else None
    return DecodeCache(positions_BxC=jnp.full((batch, capacity), -1, jnp.int32), layers=layers,
                       context_valid_BxS=context_valid, per_layer=per_layer)


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


def _recurrent_entries(layers) -> set:
    entries = layers if isinstance(layers, (list, tuple)) else [layers]
    found = set()
    for entry in entries:
        if isinstance(entry, (list, tuple)):
            found |= _recurrent_entries(entry)
        else:
            found |= {name for name in ("ssm", "S") if name in entry}
    return found


def forget_after(cache: DecodeCache, last_position_B: jax.Array) -> DecodeCache:
    """Drop every cached token whose position is beyond `last_position_B` (rejected draft tokens).
    Recurrent states (SSM layers, linear attention) have already absorbed those tokens and cannot be
    rewound: a ValueError. With a ring buffer, the forgotten tokens' slots no longer hold the older
    keys they replaced: use a cache with `cache_capacity(..., ring=False)` when rolling back."""
    if _recurrent_entries(cache.layers):
        raise ValueError("forget_after cannot rewind recurrent states (SSM layers, linear attention)")
    positions = jnp.where(cache.positions_BxC > last_position_B[:, None], -1, cache.positions_BxC)
    return dataclasses.replace(cache, positions_BxC=positions)


def reorder(cache: DecodeCache, index_B: jax.Array) -> DecodeCache:
    """The cache rows taken in the order `index_B` (beam search keeps the surviving beams)."""
    layers = jax.tree.map(lambda a: jnp.take(a, index_B, axis=0 if cache.per_layer else 1), cache.layers)
    context_valid = None if cache.context_valid_BxS is None else cache.context_valid_BxS[index_B]
    return DecodeCache(positions_BxC=cache.positions_BxC[index_B], layers=layers,
                       context_valid_BxS=context_valid, per_layer=cache.per_layer)


def write_slots(cache_BxCx___, new_BxTx___, slots_BxT):
    """cache[b, slots[b, t]] = new[b, t]; slots equal to the capacity C (out of range) are not written."""
    rows_Bx1 = jnp.arange(cache_BxCx___.shape[0])[:, None]
    return cache_BxCx___.at[rows_Bx1, slots_BxT].set(new_BxTx___.astype(cache_BxCx___.dtype), mode="drop")


def _write_tokens(cache, new_BxTxKxH, slots_BxT, keys: bool, index=None):
    """The new tokens' keys or values written at their slots (slots at the capacity are dropped);
    `index` selects the layer of a stacked cache. Keys [B, K, H, C] have the slot as their last axis,
    values [B, K, C, H] before the head dim; either way the indices broadcast to [B, K, T] and the
    written block is [B, K, T, H]."""
    B, _, K, _ = new_BxTxKxH.shape
    rows, heads, slots = jnp.arange(B)[:, None, None], jnp.arange(K)[None, :, None], slots_BxT[:, None, :]
    where = (rows, heads, slice(None), slots) if keys else (rows, heads, slots)
    if index is not None:
        where = (index, *where)
    return cache.at[where].set(new_BxTxKxH.transpose(0, 2, 1, 3).astype(cache.dtype), mode="drop")


def write_keys(cache_BxKxHxC, new_BxTxKxH, slots_BxT):
    """A layer's key cache [B, K, H, C] with the new tokens' keys [B, T, K, H] written at their slots."""
    return _write_tokens(cache_BxKxHxC, new_BxTxKxH, slots_BxT, keys=True)


def write_values(cache_BxKxCxH, new_BxTxKxH, slots_BxT):
    """A layer's value cache [B, K, C, H] with the new tokens' values [B, T, K, H] written at their slots."""
    return _write_tokens(cache_BxKxCxH, new_BxTxKxH, slots_BxT, keys=False)


def _apply_layer_updates(caches: dict, updates: dict, index, slots_BxT, written: bool = False) -> dict:
    """Write a layer's updates into its caches; `index` selects the layer of stacked caches (None:
    the caches are that layer's own buffers)."""
    put = (lambda a, v: a.at[index].set(v.astype(a.dtype))) if index is not None else (lambda a, v: v.astype(a.dtype))
    out = dict(caches)
    for name, value in updates.items():
        if name in ("k", "v") and not written:  # the new tokens' [B, T, K, H], written in place at their slots
            out[name] = _write_tokens(caches[name], value, slots_BxT, keys=name == "k", index=index)
        else:  # whole entries: an SSM state, or the cross-attention keys/values at prefill
            out[name] = jax.tree.map(put, caches[name], value)
    return out


def apply_updates(layer_caches, updates, index, slots_BxT, written: bool = False):
    """Write one layer group's updates (Block.extend / LayerGroup.extend) into its caches (`written`:
    the layer already wrote its k/v caches, which replace the old ones)."""
    if isinstance(layer_caches, tuple):
        return tuple(_apply_layer_updates(c, u, index, slots_BxT, written) for c, u in zip(layer_caches, updates))
    return _apply_layer_updates(layer_caches, updates, index, slots_BxT, written)


def unstack_layers(stack) -> list:
    """The stacked layers as one module per layer group. Inside a compiled decode loop, slicing the
    weights once before the loop (instead of in every step) and running the layers unrolled over
    per-layer caches avoids a copy of every layer's weights and cache per token."""
    from flax import nnx

    graphdef, state = nnx.split(stack)
    n_groups = jax.tree.leaves(state)[0].shape[0]
    return [nnx.merge(graphdef, jax.tree.map(lambda a, i=i: a[i], state)) for i in range(n_groups)]


def run_stack_extend(config: ModelConfig, stack, x_BxTxD, inputs, layer_caches, layers: list | None = None):
    """The stacked layers' incremental forward. With per-layer caches (a list) and `layers` from
    `unstack_layers`, the layers run unrolled, each updating its own cache in place; otherwise a scan
    (or a loop, `scan_layers=False`) over the layers carries the stacked caches and writes only the
    new tokens' entries."""
    from flax import nnx

    if isinstance(layer_caches, list):
        layers = unstack_layers(stack) if layers is None else layers
        new_caches = []
        for layer, layer_cache in zip(layers, layer_caches):
            x_BxTxD, updates = layer.extend(x_BxTxD, inputs, layer_cache)
            new_caches.append(apply_updates(layer_cache, updates, None, inputs.slots, inputs.write_first))
        return x_BxTxD, new_caches

    graphdef, state = nnx.split(stack)

    def body(carry, layer):
        x, caches = carry
        layer_state, index = layer
        layer_cache = jax.tree.map(lambda a: a[index], caches)
        x, updates = nnx.merge(graphdef, layer_state).extend(x, inputs, layer_cache)
        return (x, apply_updates(caches, updates, index, inputs.slots)), None

    n_groups = jax.tree.leaves(state)[0].shape[0]
    if config.scan_layers:
        return jax.lax.scan(body, (x_BxTxD, layer_caches), (state, jnp.arange(n_groups)))[0]
    carry = (x_BxTxD, layer_caches)
    for i in range(n_groups):
        carry, _ = body(carry, (jax.tree.map(lambda a, i=i: a[i], state), i))
    return carry
