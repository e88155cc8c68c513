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
array and one `WritePlan` per call; each layer has its own state, a small object per mixer:

    attention layer   KVCache(k [B, K, H, C], v [B, K, C, H])   K = n_kv_heads (GQA caches K heads);
                                                                keys transposed, so q.k and p.v are
                                                                both plain matrix products
    linear attention  LinearAttentionState(S [B, N, H, H], z [B, N, H])   running sums of phi(k) v^T, phi(k)
    SSM layer         SSMCache(conv, ssm)                       O(1) state (lmx.nn.ssm)
    + cross-attention CrossKV(k [B, K, H, S], v [B, K, S, H])   encoder states, projected once at prefill

A layer's state is `{"mixer": ..., "cross": ...}` ("cross" only in encoder-decoder decoders); a
layer group (model.layer_pattern "AM", ...) holds a tuple of them. Per-layer states are stacked
on a leading `layers` axis like the parameters, or kept as a list (`per_layer=True`, the layout of
an unrolled decode step in which every layer updates its own buffers in place).

Layers see their state through `LayerCache(state, plan)`: every mixer's `__call__(x, inputs,
cache)` returns its output and its new state, so training, prefill and decoding run the same code.

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
from flax import nnx

from lmx.config import ModelConfig
from lmx.nn.layer_inputs import LayerCache, WritePlan  # noqa: F401  (re-exported)
from lmx.nn.params import dtype_of
from lmx.nn.ssm import SSMCache


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    """One attention layer's keys [B, K, H, C] and values [B, K, C, H], slot c at position positions_BxC[:, c]."""

    k: jax.Array
    v: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CrossKV:
    """Cross-attention keys [B, K, H, S] and values [B, K, S, H] of the encoder states (written at prefill)."""

    k: jax.Array
    v: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LinearAttentionState:
    """Linear attention's running sums: S = sum phi(k) v^T [B, N, H, H], z = sum phi(k) [B, N, H]."""

    S: jax.Array
    z: jax.Array


RECURRENT_STATES = (LinearAttentionState, SSMCache)  # absorb tokens for good: cannot be rewound


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DecodeCache:
    positions_BxC: jax.Array  # int32 position held by each slot; -1 = empty
    layers: Any  # per-layer states stacked on a leading layers axis, or a list of them (per_layer)
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


def _mixer_state(config: ModelConfig, layer_type: str, batch: int, capacity: int, dtype):
    if layer_type == "M":
        inner = config.ssm.expand * config.d_model
        return SSMCache(conv_BxKm1xE=jnp.zeros((batch, config.ssm.conv - 1, inner), jnp.float32),
                        ssm_BxExN=jnp.zeros((batch, inner, config.ssm.state), jnp.float32))
    if config.attention.kind == "linear":
        N, H = config.n_heads, config.resolved_head_dim
        return LinearAttentionState(S=jnp.zeros((batch, N, H, H), jnp.float32), z=jnp.zeros((batch, N, H), jnp.float32))
    K, H = config.n_kv_heads, config.resolved_head_dim
    return KVCache(k=jnp.zeros((batch, K, H, capacity), dtype), v=jnp.zeros((batch, K, capacity, H), dtype))


def init_cache(config: ModelConfig, batch: int, capacity: int, *, context_len: int = 0,
               per_layer: bool = False) -> DecodeCache:
    """An empty cache with `capacity` slots per row (and room for `context_len` encoder states when
    the architecture has cross-attention). `per_layer` keeps one state per layer group (a list)
    instead of one stacked state: the layout of an unrolled decode step (`unstack_layers`)."""
    cross = config.architecture.has_cross_attention
    _, pattern, _ = config.architecture.stacks(config)[-1]  # the decoding stack
    dtype = dtype_of(config.compute_dtype)
    entries = []
    for layer_type in pattern:
        entry = {"mixer": _mixer_state(config, layer_type, batch, capacity, dtype)}
        if cross:
            K, H = config.n_kv_heads, config.resolved_head_dim
            entry["cross"] = CrossKV(k=jnp.zeros((batch, K, H, context_len), dtype),
                                     v=jnp.zeros((batch, K, context_len, H), dtype))
        entries.append(entry)
    group = entries[0] if len(entries) == 1 else tuple(entries)
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


def plan_call(cache: DecodeCache, positions_BxT, valid_BxT, fresh: bool, ring_possible: bool):
    """(WritePlan, the cache's positions after the call) for T new tokens at `positions_BxT`. Per-layer
    caches are written before attending (in place, nothing copied), unless a sliding-window ring could
    overwrite, within this call, keys that earlier new tokens still attend to."""
    slots_BxT, new_keys_BxT = write_plan(positions_BxT, valid_BxT, cache.capacity)
    positions_after = write_slots(cache.positions_BxC, positions_BxT.astype(jnp.int32), slots_BxT)
    write_first = cache.per_layer and not fresh and (positions_BxT.shape[1] == 1 or not ring_possible)
    if fresh:
        k_positions = new_keys_BxT
    elif write_first:
        k_positions = positions_after
    else:
        k_positions = jnp.concatenate([cache.positions_BxC, new_keys_BxT], axis=1)
    return WritePlan(slots_BxT, k_positions, fresh, write_first), positions_after


def _states(layers) -> list:
    return [s for s in jax.tree.leaves(layers, is_leaf=lambda x: isinstance(x, (*RECURRENT_STATES, KVCache, CrossKV)))]


def forget_after(cache: DecodeCache, last_position_B: jax.Array) -> DecodeCache:
    """Drop every cached token whose position is beyond `last_position_B` (rejected draft tokens).
    Recurrent states (SSM layers, linear attention) have already absorbed those tokens and cannot be
    rewound: a ValueError. With a ring buffer, the forgotten tokens' slots no longer hold the older
    keys they replaced: use a cache with `cache_capacity(..., ring=False)` when rolling back."""
    if any(isinstance(s, RECURRENT_STATES) for s in _states(cache.layers)):
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


def _write_tokens(cache, new_BxTxKxH, slots_BxT, keys: bool):
    """The new tokens' keys or values written at their slots (slots at the capacity are dropped).
    Keys [B, K, H, C] have the slot as their last axis, values [B, K, C, H] before the head dim; either
    way the indices broadcast to [B, K, T] and the written block is [B, K, T, H]."""
    B, _, K, _ = new_BxTxKxH.shape
    rows, heads, slots = jnp.arange(B)[:, None, None], jnp.arange(K)[None, :, None], slots_BxT[:, None, :]
    where = (rows, heads, slice(None), slots) if keys else (rows, heads, slots)
    return cache.at[where].set(new_BxTxKxH.transpose(0, 2, 1, 3).astype(cache.dtype), mode="drop")


def write_keys(cache_BxKxHxC, new_BxTxKxH, slots_BxT):
    """A layer's key cache [B, K, H, C] with the new tokens' keys [B, T, K, H] written at their slots."""
    return _write_tokens(cache_BxKxHxC, new_BxTxKxH, slots_BxT, keys=True)


def write_values(cache_BxKxCxH, new_BxTxKxH, slots_BxT):
    """A layer's value cache [B, K, C, H] with the new tokens' values [B, T, K, H] written at their slots."""
    return _write_tokens(cache_BxKxCxH, new_BxTxKxH, slots_BxT, keys=False)


def write_kv(cache: KVCache, k_BxTxKxH, v_BxTxKxH, slots_BxT) -> KVCache:
    return KVCache(write_keys(cache.k, k_BxTxKxH, slots_BxT), write_values(cache.v, v_BxTxKxH, slots_BxT))


def unstack_layers(stack) -> list:
    """The stacked layers as one module per layer group. Inside a compiled decode loop, slicing the
    weights once before the loop (instead of in every step) and running the layers unrolled over
    per-layer caches avoids a copy of every layer's weights and cache per token."""
    graphdef, state = nnx.split(stack)
    n_groups = jax.tree.leaves(state)[0].shape[0]
    return [nnx.merge(graphdef, jax.tree.map(lambda a, i=i: a[i], state)) for i in range(n_groups)]
