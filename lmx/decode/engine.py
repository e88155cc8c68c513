"""Token-level generation with a KV cache: one compiled prefill, one compiled decode loop.

    prefill   every prompt (right-padded to the longest) runs through `model.extend(..., fresh=True)`
              once, filling the cache (lmx.nn.kv_cache) and giving the logits after each prompt's
              last token. Encoder-decoders encode the prompt once and cache the cross-attention keys.
    decode    a `jax.lax.while_loop` (no Python per token): process the logits (lmx.decode.logits),
              pick a token (argmax or a seeded categorical draw), feed it back through `extend`.
              Rows stop at EOS or at their budget: `max_new_tokens`, or the context (`context_len`
              minus the prompt) when that comes first. The loop ends when every row has stopped.

Each row decodes at its own positions (prompt lengths differ), so a batch gives the same greedy
tokens as decoding its prompts one by one. Randomness: draw t uses `fold_in(key(seed), t)`.

`run_chunk` continues a `DecodeState` for a bounded number of steps, so callers can look at the
text in between (stop strings, lmx.decode.text) without recompiling. `stream` is called from
inside the compiled loop (`jax.experimental.io_callback`) with the new token of every row, as
the tokens are produced.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmx.decode.logits import SamplingConfig, log_softmax_safe, process_logits, sample_token, warp_logits
from lmx.errors import ConfigError
from lmx.nn.kv_cache import DecodeCache, cache_capacity, unstack_layers

TABLE_POSITIONS = ("learned", "base_n")  # absolute schemes with a trained table: no position beyond it
UNROLL_LAYERS = 16  # up to this many layer groups, decoding unrolls the layers over per-layer caches


def decode_layers(model) -> list | None:
    """The model's (decoder) layers as one module per layer group for an unrolled decode step, or
    None (scan the stacked layers) when there are more than UNROLL_LAYERS groups: unrolling avoids
    slicing every layer's weights and cache at every token, at the price of compile time that grows
    with depth."""
    n_groups = jax.tree.leaves(nnx.state(model.decoding_stack))[0].shape[0]
    return unstack_layers(model.decoding_stack) if n_groups <= UNROLL_LAYERS else None


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DecodeState:
    cache: DecodeCache
    logits_BxV: jax.Array  # float32 next-token logits of the model (raw)
    history_BxT: jax.Array  # int32 prompt, then new tokens, left-aligned
    length_B: jax.Array  # tokens in history (the position of the next token)
    prompt_length_B: jax.Array
    budget_B: jax.Array  # new tokens allowed
    new_B: jax.Array  # new tokens so far
    done_B: jax.Array
    eos_B: jax.Array  # stopped at EOS
    logprob_BxT: jax.Array  # log p_model(token) of each new token, at its position in history
    step: jax.Array
    key: jax.Array


@dataclasses.dataclass
class GenerationOutput:
    tokens: list[list[int]]  # new tokens per row, EOS excluded
    finish_reasons: list[str]  # "eos", "length" (max_new_tokens) or "context" (context_len reached)
    logprobs: list[float]  # sum of the model's log-probabilities of the new tokens (EOS included)
    stats: dict
    token_logprobs: list[list[float]] = dataclasses.field(default_factory=list)  # per new token (EOS included)


@dataclasses.dataclass(frozen=True)
class Prompts:
    """Right-padded prompt ids and their lengths, checked against the context."""

    tokens_BxP: np.ndarray
    lengths_B: np.ndarray
    context_len: int

    @property
    def batch(self) -> int:
        return self.tokens_BxP.shape[0]


def context_length(config, context_len: int | None) -> int:
    """The longest sequence (prompt + new tokens) decoding may reach; `model.max_seq_len` by default.
    Longer contexts are allowed for position schemes without a trained table (extrapolation)."""
    context_len = config.max_seq_len if context_len is None else int(context_len)
    if context_len < 1:
        raise ConfigError(f"context_len must be >= 1, got {context_len}")
    if context_len > config.max_seq_len and config.position.kind in TABLE_POSITIONS:
        raise ConfigError(f"context_len={context_len} exceeds model.max_seq_len={config.max_seq_len}, the size of "
                          f"the trained position table (position={config.position.kind})")
    return context_len


def pack_prompts(prompt_ids: Sequence[Sequence[int]], *, context_len: int, pad_id: int = 0,
                 truncate: bool = False, reserve: int = 1) -> Prompts:
    """Right-pad the prompts. A prompt that leaves fewer than `reserve` positions of the context is an
    error, or, with `truncate`, keeps its last `context_len - reserve` tokens."""
    if isinstance(prompt_ids, np.ndarray) and prompt_ids.ndim == 2:
        prompt_ids = prompt_ids.tolist()
    if not prompt_ids:
        raise ConfigError("prompts: at least one prompt is needed")
    room = context_len - reserve
    if room < 1:
        raise ConfigError(f"context_len={context_len} leaves no room for a prompt and a new token")
    rows = []
    for i, ids in enumerate(prompt_ids):
        ids = [int(t) for t in ids]
        if not ids:
            raise ConfigError(f"prompt {i} is empty (encode it with at least one token, e.g. EOS)")
        if len(ids) > room:
            if not truncate:
                raise ConfigError(f"prompt {i} has {len(ids)} tokens; the context holds {context_len} with "
                                  f"{reserve} for new tokens (pass truncate=True / --truncate-prompt to keep "
                                  f"the last {room}, or raise context_len)")
            ids = ids[len(ids) - room:]
        rows.append(ids)
    longest = max(len(r) for r in rows)
    tokens = np.full((len(rows), longest), pad_id, np.int32)
    for i, ids in enumerate(rows):
        tokens[i, : len(ids)] = ids
    return Prompts(tokens, np.array([len(r) for r in rows], np.int32), context_len)


@functools.partial(jax.jit, static_argnames=("graphdef", "capacity", "history_len"))
def prefill(graphdef, params, tokens_BxP, lengths_B, budget_B, key, *, capacity: int, history_len: int,
            encoder_tokens_BxS=None, encoder_valid_BxS=None) -> DecodeState:
    """Run the prompts through the model once; the state holds the cache and the next-token logits.
    For an encoder-decoder the prompts go to the encoder and `tokens_BxP` is the decoder start."""
    model = nnx.merge(graphdef, params)
    B, P = tokens_BxP.shape
    valid = jnp.arange(P)[None, :] < lengths_B[:, None]
    logits, cache = model.start_decoding(tokens_BxP, lengths_B, capacity, layers=decode_layers(model),
                                         encoder_tokens_BxS=encoder_tokens_BxS, encoder_valid_BxS=encoder_valid_BxS)
    history = jnp.zeros((B, history_len), jnp.int32).at[:, :P].set(jnp.where(valid, tokens_BxP, 0))
    zeros = jnp.zeros((B,), jnp.int32)
    return DecodeState(cache=cache, logits_BxV=logits[:, 0], history_BxT=history, length_B=lengths_B,
                       prompt_length_B=lengths_B, budget_B=budget_B, new_B=zeros, done_B=budget_B <= 0,
                       eos_B=jnp.zeros((B,), bool), logprob_BxT=jnp.zeros((B, history_len), jnp.float32),
                       step=jnp.zeros((), jnp.int32), key=key)


def mask_vocab(logits_BxV, vocab_limit: int | None):
    """Ids >= vocab_limit (padding rows of the embedding beyond the tokenizer) can never be chosen."""
    if vocab_limit is None or vocab_limit >= logits_BxV.shape[-1]:
        return logits_BxV
    return jnp.where(jnp.arange(logits_BxV.shape[-1]) < vocab_limit, logits_BxV, -jnp.inf)


def choose(state: DecodeState, sampling: SamplingConfig, vocab_limit: int | None, key):
    """The next token of every row from its raw logits (processors, warpers, then argmax or a draw)."""
    logits = mask_vocab(state.logits_BxV, vocab_limit)
    if sampling.uses_history:
        logits = process_logits(logits, sampling, state.history_BxT, state.length_B, state.prompt_length_B)
    else:
        logits = warp_logits(logits, sampling)
    return sample_token(logits, sampling, key)


def extend_kwargs(model, prompt_length_B, layers) -> dict:
    """Keyword arguments of `model.extend` for a decode step."""
    return {"layers": layers, "prefix_len_B": prompt_length_B}  # the prompt is a prefix-LM's prefix


def _step(model, layers, state: DecodeState, sampling, eos_id, vocab_limit, stream) -> DecodeState:
    rows = jnp.arange(state.length_B.shape[0])
    token_B = choose(state, sampling, vocab_limit, jax.random.fold_in(state.key, state.step))
    active_B = ~state.done_B
    token_B = jnp.where(active_B, token_B, 0).astype(jnp.int32)
    logprob_B = jnp.take_along_axis(log_softmax_safe(mask_vocab(state.logits_BxV, vocab_limit)),
                                    token_B[:, None], axis=1)[:, 0]
    if stream is not None:
        jax.experimental.io_callback(stream, None, token_B, active_B, ordered=True)
    write_at = jnp.where(active_B, state.length_B, state.history_BxT.shape[1])
    history = state.history_BxT.at[rows, write_at].set(token_B, mode="drop")
    logprob_BxT = state.logprob_BxT.at[rows, write_at].set(logprob_B, mode="drop")
    new_B = state.new_B + active_B
    hit_eos = active_B & (token_B == eos_id) if eos_id is not None else jnp.zeros_like(active_B)
    logits, cache = model.extend(token_B[:, None], state.length_B[:, None], state.cache, valid_BxT=active_B[:, None],
                                 **extend_kwargs(model, state.prompt_length_B, layers))
    return dataclasses.replace(
        state, cache=cache, logits_BxV=logits[:, 0], history_BxT=history, length_B=state.length_B + active_B,
        new_B=new_B, done_B=state.done_B | hit_eos | (new_B >= state.budget_B), eos_B=state.eos_B | hit_eos,
        logprob_BxT=logprob_BxT, step=state.step + 1)


# Streaming goes through one module-level function, so the compiled loop does not depend on which
# callback a call streams to (a new callable as a static argument would recompile the loop per call).
# The lock makes streamed calls from several threads take turns.
_stream_lock = threading.RLock()
_stream_target: list = [None]


def _deliver(tokens_B, active_B) -> None:
    _stream_target[0](tokens_B, active_B)


@contextlib.contextmanager
def _streaming_to(stream: Callable):
    with _stream_lock:
        previous, _stream_target[0] = _stream_target[0], stream
        try:
            yield
        finally:
            _stream_target[0] = previous


@functools.partial(jax.jit, static_argnames=("graphdef", "sampling", "eos_id", "vocab_limit", "streamed"),
                   donate_argnames=("state",))
def _run_chunk(graphdef, params, state: DecodeState, limit, *, sampling: SamplingConfig, eos_id: int | None,
               vocab_limit: int | None, streamed: bool) -> DecodeState:
    model = nnx.merge(graphdef, params)
    layers = decode_layers(model) if state.cache.per_layer else None  # sliced once, outside the loop
    stream = _deliver if streamed else None
    return jax.lax.while_loop(lambda s: (s.step < limit) & ~jnp.all(s.done_B),
                              lambda s: _step(model, layers, s, sampling, eos_id, vocab_limit, stream), state)


def run_chunk(graphdef, params, state: DecodeState, limit, *, sampling: SamplingConfig, eos_id: int | None,
              vocab_limit: int | None = None, stream: Callable | None = None) -> DecodeState:
    """Decode until step == limit or every row is done (one compiled while_loop; `limit` is traced).
    `stream(tokens_B, active_B)` is called from inside the loop at every step; a streamed call waits
    for the loop to finish before it returns, and every streamed call shares one compiled loop."""
    if stream is None:
        return _run_chunk(graphdef, params, state, limit, sampling=sampling, eos_id=eos_id,
                          vocab_limit=vocab_limit, streamed=False)
    with _streaming_to(stream):
        state = _run_chunk(graphdef, params, state, limit, sampling=sampling, eos_id=eos_id,
                           vocab_limit=vocab_limit, streamed=True)
        jax.block_until_ready(state)  # every callback has run before the target changes
    return state


def start(model, prompt_ids, *, max_new_tokens: int, seed: int = 0, context_len: int | None = None,
          truncate: bool = False, pad_id: int = 0, decoder_start_id: int | None = None):
    """(graphdef, params, state after prefill, stats): validate, pack and prefill the prompts."""
    config = model.config
    if not config.architecture.causal:
        raise ConfigError(f"model.arch={config.arch} is a masked-LM encoder: it does not generate text "
                          "(use sentence_embedding or the MLM logits)")
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    context_len = context_length(config, context_len)
    graphdef, params = nnx.split(model)
    key = jax.random.key(seed)
    t0 = time.perf_counter()
    if config.architecture.has_cross_attention:  # the prompt goes to the encoder
        encoder = pack_prompts(prompt_ids, context_len=context_len + 1, pad_id=pad_id, truncate=truncate)
        start_id = pad_id if decoder_start_id is None else decoder_start_id
        B = encoder.batch
        budget = np.minimum(max_new_tokens, context_len - 1)
        capacity = cache_capacity(config, 1 + int(budget))
        state = prefill(graphdef, params, jnp.full((B, 1), start_id, jnp.int32), jnp.ones((B,), jnp.int32),
                        jnp.full((B,), budget, jnp.int32), key, capacity=capacity, history_len=1 + int(budget),
                        encoder_tokens_BxS=jnp.asarray(encoder.tokens_BxP),
                        encoder_valid_BxS=jnp.asarray(np.arange(encoder.tokens_BxP.shape[1]) < encoder.lengths_B[:, None]))
        prompts = Prompts(np.full((B, 1), start_id, np.int32), np.ones((B,), np.int32), context_len)
    else:
        prompts = pack_prompts(prompt_ids, context_len=context_len, pad_id=pad_id, truncate=truncate)
        budget = np.minimum(max_new_tokens, context_len - prompts.lengths_B)
        total = int((prompts.lengths_B + budget).max())
        state = prefill(graphdef, params, jnp.asarray(prompts.tokens_BxP), jnp.asarray(prompts.lengths_B),
                        jnp.asarray(budget, jnp.int32), key, capacity=cache_capacity(config, total),
                        history_len=total)
    jax.block_until_ready(state.logits_BxV)
    stats = {"prefill_s": time.perf_counter() - t0, "prompt_tokens": int(prompts.lengths_B.sum()),
             "batch": prompts.batch}
    return graphdef, params, state, prompts, stats


def finish(state: DecodeState, max_new_tokens: int, eos_id: int | None) -> GenerationOutput:
    """Host-side results: each row's new tokens (EOS dropped), finish reason and log-probabilities."""
    history, prompt_len = np.asarray(state.history_BxT), np.asarray(state.prompt_length_B)
    logprob = np.asarray(state.logprob_BxT)
    new, eos, budget = np.asarray(state.new_B), np.asarray(state.eos_B), np.asarray(state.budget_B)
    tokens, reasons, token_logprobs = [], [], []
    for b in range(history.shape[0]):
        span = slice(prompt_len[b], prompt_len[b] + new[b])
        ids = history[b, span].tolist()
        token_logprobs.append(logprob[b, span].tolist())
        tokens.append(ids[:-1] if eos[b] else ids)
        reasons.append("eos" if eos[b] else ("length" if budget[b] >= max_new_tokens else "context"))
    return GenerationOutput(tokens=tokens, finish_reasons=reasons, logprobs=[float(sum(t)) for t in token_logprobs],
                            stats={}, token_logprobs=token_logprobs)


def generate_tokens(model, prompt_ids: Sequence[Sequence[int]], *, max_new_tokens: int,
                    sampling: SamplingConfig | None = None, eos_id: int | None = None, seed: int = 0,
                    context_len: int | None = None, truncate: bool = False, pad_id: int = 0,
                    vocab_limit: int | None = None, stream: Callable | None = None,
                    decoder_start_id: int | None = None) -> GenerationOutput:
    """Continue every prompt (token ids) by up to `max_new_tokens` tokens; see the module docstring.

    `sampling` defaults to greedy. `stream(tokens_B, active_B)` (numpy) is called once per step from
    inside the compiled loop. `stats` reports prefill and decode seconds (compiled calls, waited for).
    """
    sampling = SamplingConfig(temperature=0.0) if sampling is None else sampling
    graphdef, params, state, _, stats = start(model, prompt_ids, max_new_tokens=max_new_tokens, seed=seed,
                                              context_len=context_len, truncate=truncate, pad_id=pad_id,
                                              decoder_start_id=decoder_start_id)
    t0 = time.perf_counter()
    state = run_chunk(graphdef, params, state, jnp.int32(max_new_tokens), sampling=sampling, eos_id=eos_id,
                      vocab_limit=vocab_limit, stream=stream)
    jax.block_until_ready(state.new_B)
    stats["decode_s"] = time.perf_counter() - t0
    out = finish(state, max_new_tokens, eos_id)
    stats["new_tokens"] = int(np.asarray(state.new_B).max())
    out.stats = stats
    return out
