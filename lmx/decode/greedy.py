"""Greedy decoding with a full forward pass per token over a fixed buffer, compiled once.

Each prompt is left-aligned in a [n, max_len] buffer; step t feeds the whole buffer through the
causal model and writes argmax(logits[i, len_i - 1]) at position len_i. Causality makes the padding
after each prompt irrelevant. The loop is a `lax.fori_loop`, so there is no Python per token.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


@functools.partial(jax.jit, static_argnums=(0, 4))
def _greedy_loop(graphdef, params, buffer_NxT, lengths_N, new_tokens: int):
    model = nnx.merge(graphdef, params)
    rows = jnp.arange(buffer_NxT.shape[0])

    def body(_, carry):
        buffer, lengths = carry
        logits_NxTxV = model(buffer)
        next_token = jnp.argmax(logits_NxTxV[rows, lengths - 1], axis=-1).astype(buffer.dtype)
        buffer = buffer.at[rows, lengths].set(next_token)
        return buffer, lengths + 1

    buffer, _ = jax.lax.fori_loop(0, new_tokens, body, (buffer_NxT, lengths_N))
    return buffer


def greedy_generate(model, tokenizer, prompts: list[str], max_new_tokens: int, max_len: int) -> list[str]:
    """Continue each prompt greedily by `max_new_tokens` tokens; returns the decoded continuations."""
    encoded = [tokenizer.encode(p) or [tokenizer.eos_id] for p in prompts]
    longest = max(len(e) for e in encoded)
    new_tokens = min(max_new_tokens, max_len - longest)
    if new_tokens <= 0:
        return ["" for _ in prompts]
    buffer = np.full((len(prompts), max_len), tokenizer.pad_id, np.int32)
    for i, ids in enumerate(encoded):
        buffer[i, : len(ids)] = ids
    lengths = np.array([len(e) for e in encoded], np.int32)
    graphdef, params = nnx.split(model)
    out = np.asarray(_greedy_loop(graphdef, params, jnp.asarray(buffer), jnp.asarray(lengths), new_tokens))
    texts = []
    for i, ids in enumerate(encoded):
        continuation = out[i, len(ids) : len(ids) + new_tokens].tolist()
        if tokenizer.eos_id in continuation:
            continuation = continuation[: continuation.index(tokenizer.eos_id)]
        texts.append(tokenizer.decode(continuation))
    return texts
