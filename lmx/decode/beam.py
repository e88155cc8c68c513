"""Beam search with a KV cache, compiled as one while_loop.

Each prompt keeps W live beams (prefixes) with their summed log-probabilities. A step scores every
extension of every beam, sum + log p(token | beam), and keeps the 2W best: those ending in EOS among
the first W become finished hypotheses, and the W best that do not end in EOS are the next beams
(the procedure of Hugging Face transformers' beam search). A finished hypothesis scores
    logprob_sum / length^length_penalty
(length = new tokens including EOS; length_penalty > 0 favours longer outputs, < 0 shorter ones).
`early_stopping=True` ends a prompt once it has W finished hypotheses; `False` ends it when no
live beam can still beat the worst of them at the current length (HF's heuristic). At the end the
live beams of unfinished prompts join the finished ones, and the n best are returned.
Beam search is deterministic; the sampling options do not apply to it.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmx.decode.engine import (
    context_length,
    decode_layers,
    extend_kwargs,
    mask_vocab,
    pack_prompts,
    prefill,
)
from lmx.decode.logits import log_softmax_safe
from lmx.errors import ConfigError
from lmx.nn import kv_cache
from lmx.nn.kv_cache import DecodeCache, cache_capacity


@dataclasses.dataclass
class Hypothesis:
    tokens: list[int]  # new tokens, EOS excluded
    score: float  # logprob / length^length_penalty
    logprob: float  # sum of log-probabilities of the new tokens (EOS included)
    finished: bool  # ended with EOS


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BeamState:
    cache: DecodeCache  # B * W rows
    logits: jax.Array  # [B*W, V]
    length: jax.Array  # [B*W] next position
    seqs: jax.Array  # [B, W, N] new tokens of the live beams
    scores: jax.Array  # [B, W] summed log-probabilities (-inf: no beam)
    fin_seqs: jax.Array  # [B, W, N]
    fin_scores: jax.Array  # [B, W] normalised score (-inf: empty)
    fin_logprob: jax.Array  # [B, W]
    fin_len: jax.Array  # [B, W]
    done: jax.Array  # [B]
    step: jax.Array
    prompt_len: jax.Array  # [B*W] (arch=prefix_lm: the prefix)


def _normalise(logprob, length, length_penalty: float):
    return logprob / jnp.power(length.astype(jnp.float32), length_penalty)


def _top_finished(scores, logprob, length, seqs, width: int):
    """The `width` best finished hypotheses (by normalised score) of a candidate pool [B, M]."""
    best, index = jax.lax.top_k(scores, width)
    take = lambda a: jnp.take_along_axis(a, index.reshape(index.shape + (1,) * (a.ndim - 2)), axis=1)
    return take(seqs), best, take(logprob), take(length)


def _beam_step(model, layers, s: BeamState, *, width, eos_id, length_penalty, early_stopping, vocab_limit) -> BeamState:
    B, W, N = s.seqs.shape
    V = s.logits.shape[-1]
    t = s.step
    logp = log_softmax_safe(mask_vocab(s.logits, vocab_limit)).reshape(B, W, V)
    candidates = (s.scores[:, :, None] + logp).reshape(B, W * V)
    values, index = jax.lax.top_k(candidates, 2 * W)  # [B, 2W], best first
    beam, token = index // V, (index % V).astype(jnp.int32)
    is_eos = (token == eos_id) if eos_id is not None else jnp.zeros_like(token, bool)
    parent_seqs = jnp.take_along_axis(s.seqs, beam[..., None], axis=1).at[:, :, t].set(token)  # [B, 2W, N]
    new_len = jnp.full(values.shape, t + 1, jnp.int32)
    # finished candidates: EOS among the first W; live: the first W that are not EOS
    rank = jnp.arange(2 * W)[None]
    finishing = is_eos & (rank < W) & jnp.isfinite(values) & ~s.done[:, None]
    pool_scores = jnp.concatenate([s.fin_scores, jnp.where(finishing, _normalise(values, new_len, length_penalty),
                                                           -jnp.inf)], axis=1)
    fin = _top_finished(pool_scores, jnp.concatenate([s.fin_logprob, values], axis=1),
                        jnp.concatenate([s.fin_len, new_len], axis=1),
                        jnp.concatenate([s.fin_seqs, parent_seqs], axis=1), W)
    order = jnp.argsort(jnp.where(is_eos, 2 * W, 0) + rank, axis=1)[:, :W]
    pick = lambda a: jnp.take_along_axis(a, order, axis=1)
    next_beam, next_token, next_scores = pick(beam), pick(token), pick(values)
    next_seqs = jnp.take_along_axis(parent_seqs, order[..., None], axis=1)
    rows = (jnp.arange(B)[:, None] * W + next_beam).reshape(-1)
    cache = kv_cache.reorder(s.cache, rows)
    length = s.length[rows]
    logits, cache = model.extend(next_token.reshape(-1, 1), length[:, None], cache,
                                 **extend_kwargs(model, s.prompt_len, layers))
    n_finished = jnp.sum(jnp.isfinite(fin[1]), axis=1)
    if early_stopping:
        done = n_finished >= W
    else:
        best_live = _normalise(next_scores[:, 0], jnp.full((B,), t + 1), length_penalty)
        done = (n_finished >= W) & (fin[1][:, -1] >= best_live)
    return BeamState(cache=cache, logits=logits[:, 0], length=length + 1, seqs=next_seqs, scores=next_scores,
                     fin_seqs=fin[0], fin_scores=fin[1], fin_logprob=fin[2], fin_len=fin[3],
                     done=s.done | done, step=t + 1, prompt_len=s.prompt_len)


@functools.partial(jax.jit, static_argnames=("graphdef", "width", "max_new", "eos_id", "length_penalty",
                                             "early_stopping", "vocab_limit", "capacity"))
def _beam_search(graphdef, params, tokens_BxP, lengths_B, *, width, max_new, eos_id, length_penalty,
                 early_stopping, vocab_limit, capacity):
    model = nnx.merge(graphdef, params)
    B = tokens_BxP.shape[0]
    W = width
    start = prefill(graphdef, params, tokens_BxP, lengths_B, jnp.full((B,), max_new, jnp.int32), jax.random.key(0),
                    capacity=capacity, history_len=tokens_BxP.shape[1])
    rows = jnp.repeat(jnp.arange(B), W)
    empty = jnp.full((B, W), -jnp.inf)
    state = BeamState(
        cache=kv_cache.reorder(start.cache, rows), logits=start.logits_BxV[rows], length=lengths_B[rows],
        seqs=jnp.zeros((B, W, max_new), jnp.int32), scores=empty.at[:, 0].set(0.0),
        fin_seqs=jnp.zeros((B, W, max_new), jnp.int32), fin_scores=empty, fin_logprob=empty,
        fin_len=jnp.zeros((B, W), jnp.int32), done=jnp.zeros((B,), bool), step=jnp.zeros((), jnp.int32),
        prompt_len=lengths_B[rows])
    layers = decode_layers(model) if start.cache.per_layer else None
    step = functools.partial(_beam_step, model, layers, width=W, eos_id=eos_id, length_penalty=length_penalty,
                             early_stopping=early_stopping, vocab_limit=vocab_limit)
    s = jax.lax.while_loop(lambda s: (s.step < max_new) & ~jnp.all(s.done), step, state)
    # unfinished prompts: their live beams compete with the finished hypotheses
    live_len = jnp.full((B, W), s.step, jnp.int32)
    live_scores = jnp.where(s.done[:, None], -jnp.inf, _normalise(s.scores, live_len, length_penalty))
    return _top_finished(jnp.concatenate([s.fin_scores, live_scores], axis=1),
                         jnp.concatenate([s.fin_logprob, s.scores], axis=1),
                         jnp.concatenate([s.fin_len, live_len], axis=1),
                         jnp.concatenate([s.fin_seqs, s.seqs], axis=1), W)


def beam_search(model, prompt_ids, *, beams: int, max_new_tokens: int, eos_id: int | None = None,
                length_penalty: float = 1.0, early_stopping: bool = True, num_return: int | None = None,
                context_len: int | None = None, truncate: bool = False, pad_id: int = 0,
                vocab_limit: int | None = None) -> list[list[Hypothesis]]:
    """The `num_return` (default: `beams`) best hypotheses per prompt, best first."""
    config = model.config
    if not config.architecture.causal or config.architecture.has_cross_attention:
        raise ConfigError(f"beam search supports arch decoder and prefix_lm, not model.arch={config.arch}")
    if not isinstance(beams, int) or isinstance(beams, bool) or beams < 1:
        raise ConfigError(f"beams must be an integer >= 1, got {beams!r}")
    num_return = beams if num_return is None else num_return
    if not 1 <= num_return <= beams:
        raise ConfigError(f"num_return must be in [1, beams={beams}], got {num_return}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if not np.isfinite(length_penalty):
        raise ConfigError(f"length_penalty must be finite, got {length_penalty}")
    context = context_length(config, context_len)
    prompts = pack_prompts(prompt_ids, context_len=context, pad_id=pad_id, truncate=truncate)
    max_new = int(min(max_new_tokens, context - prompts.lengths_B.max()))
    graphdef, params = nnx.split(model)
    total = int(prompts.lengths_B.max()) + max_new
    seqs, scores, logprob, length = _beam_search(
        graphdef, params, jnp.asarray(prompts.tokens_BxP), jnp.asarray(prompts.lengths_B), width=beams,
        max_new=max_new, eos_id=eos_id, length_penalty=float(length_penalty), early_stopping=bool(early_stopping),
        vocab_limit=vocab_limit, capacity=cache_capacity(config, total))
    seqs, scores, logprob, length = (np.asarray(a) for a in (seqs, scores, logprob, length))
    out = []
    for b in range(seqs.shape[0]):
        hyps = []
        for w in range(num_return):
            if not np.isfinite(scores[b, w]):
                continue
            ids = seqs[b, w, : length[b, w]].tolist()
            finished = eos_id is not None and bool(ids) and ids[-1] == eos_id
            hyps.append(Hypothesis(tokens=ids[:-1] if finished else ids, score=float(scores[b, w]),
                                   logprob=float(logprob[b, w]), finished=finished))
        out.append(hyps)
    return out
