"""Speculative decoding with a draft model (Leviathan et al. 2023, arXiv:2211.17192; Chen et al. 2023,
arXiv:2302.01318), compiled as one while_loop.

A round, per row with committed tokens x_1..x_n (both caches hold x_1..x_{n-1}; x_n is fed next):
    draft   feed x_n, then draw d_1..d_g one by one from the draft's distributions q_1..q_g
    target  one forward over [x_n, d_1..d_g] gives p_1..p_{g+1}
    accept  d_i with probability min(1, p_i(d_i) / q_i(d_i)), in order, until the first rejection;
            at a rejection draw from norm(max(0, p_i - q_i)); if all g are accepted draw from p_{g+1}
The committed sequence is then distributed exactly as sampling from the target alone (the papers'
Theorem 1); the cached draft tokens after the last accepted one are forgotten by position
(lmx.nn.kv_cache.forget_after). p and q are the *warped* distributions (temperature, top-k, top-p,
min-p of the SamplingConfig, the same for both models). Greedy (temperature 0): d_i is accepted when
it equals the target's argmax and the correction is that argmax, so the output is the target's
greedy output token for token. Every round commits between 1 and g + 1 tokens per row.
Penalties and n-gram rules depend on the history and are not supported here.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmx.decode.engine import GenerationOutput, context_length, decode_layers, mask_vocab, pack_prompts
from lmx.decode.logits import SamplingConfig, warp_logits
from lmx.errors import ConfigError
from lmx.nn import kv_cache
from lmx.nn.kv_cache import DecodeCache, init_cache


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SpecState:
    target: DecodeCache
    draft: DecodeCache
    history: jax.Array  # [B, T] prompt then new tokens
    logprob: jax.Array  # [B, T] log p_target (raw, before warping) of each new token
    length: jax.Array  # [B] committed tokens (the last one is not in the caches yet)
    prompt_length: jax.Array
    done: jax.Array
    eos: jax.Array
    proposed: jax.Array  # draft tokens proposed / accepted (for the acceptance rate)
    accepted: jax.Array
    rounds: jax.Array
    key: jax.Array


def _probs(logits_BxV, sampling: SamplingConfig, vocab_limit):
    """The warped distribution; greedy gives a one-hot of the argmax."""
    logits = mask_vocab(logits_BxV, vocab_limit)
    if sampling.greedy:
        return jax.nn.one_hot(jnp.argmax(logits, axis=-1), logits.shape[-1], dtype=jnp.float32)
    return jax.nn.softmax(warp_logits(logits, sampling), axis=-1)


def _draw(probs_BxV, key):
    return jax.random.categorical(key, jnp.log(probs_BxV), axis=-1).astype(jnp.int32)


def _round(target, draft, layers, s: SpecState, *, gamma, sampling, eos_id, budget, vocab_limit) -> SpecState:
    B = s.length.shape[0]
    rows = jnp.arange(B)
    key = jax.random.fold_in(s.key, s.rounds)
    last = s.history[rows, s.length - 1]
    active = ~s.done
    # draft: feed x_n, then d_1..d_g (the last feed keeps the draft cache complete when all are accepted)
    def draft_step(carry, i):
        cache, token = carry
        position = s.length - 1 + i
        logits, cache = draft.extend(token[:, None], position[:, None], cache, layers=layers[1])
        q = _probs(logits[:, 0], sampling, vocab_limit)
        proposal = _draw(q, jax.random.fold_in(key, i))
        return (cache, proposal), (proposal, q)

    (draft_cache, _), (proposals_GxB, q_GxBxV) = jax.lax.scan(draft_step, (s.draft, last), jnp.arange(gamma + 1))
    d_BxG = proposals_GxB[:gamma].T
    q_BxGxV = jnp.moveaxis(q_GxBxV[:gamma], 0, 1)
    tokens = jnp.concatenate([last[:, None], d_BxG], axis=1)  # [B, g+1]
    positions = s.length[:, None] - 1 + jnp.arange(gamma + 1)
    p_logits, target_cache = target.extend(tokens, positions, s.target, layers=layers[0])
    p_BxG1xV = jax.vmap(lambda logits: _probs(logits, sampling, vocab_limit), in_axes=1, out_axes=1)(p_logits)
    # acceptance
    p_d = jnp.take_along_axis(p_BxG1xV[:, :gamma], d_BxG[..., None], axis=2)[..., 0]
    q_d = jnp.take_along_axis(q_BxGxV, d_BxG[..., None], axis=2)[..., 0]
    if sampling.greedy:
        ok = p_d > 0.5
    else:
        u = jax.random.uniform(jax.random.fold_in(key, gamma + 1), (B, gamma))
        ok = u < jnp.minimum(1.0, p_d / jnp.maximum(q_d, 1e-30))
    n_ok = jnp.sum(jnp.cumprod(ok.astype(jnp.int32), axis=1), axis=1)  # accepted before the first rejection
    p_next = p_BxG1xV[rows, n_ok]
    q_next = jnp.concatenate([q_BxGxV, jnp.zeros_like(q_BxGxV[:, :1])], axis=1)[rows, n_ok]
    residual = jnp.maximum(p_next - q_next, 0.0)
    residual = jnp.where(residual.sum(-1, keepdims=True) > 0, residual, p_next)
    correction = _draw(residual / residual.sum(-1, keepdims=True), jax.random.fold_in(key, gamma + 2))
    # commit d_1..d_k and the correction, up to the budget and the first EOS
    new = jnp.concatenate([d_BxG, jnp.zeros((B, 1), jnp.int32)], axis=1)
    new = new.at[rows, n_ok].set(correction)  # [B, g+1]: the first n_ok + 1 are committed
    index = jnp.arange(gamma + 1)[None]
    room = budget - (s.length - s.prompt_length)
    keep = (index <= n_ok[:, None]) & (index < room[:, None]) & active[:, None]
    if eos_id is not None:
        is_eos = keep & (new == eos_id)
        first_eos = jnp.where(is_eos.any(1), jnp.argmax(is_eos, axis=1), gamma + 1)
        keep = keep & (index <= first_eos[:, None])
        hit_eos = is_eos.any(1)
    else:
        hit_eos = jnp.zeros((B,), bool)
    n_keep = keep.sum(1)
    write_at = jnp.where(keep, s.length[:, None] + index, s.history.shape[1])
    history = s.history.at[rows[:, None], write_at].set(new, mode="drop")
    raw_logp = jax.nn.log_softmax(mask_vocab(p_logits, vocab_limit), axis=-1)  # [B, g+1, V]: token j's distribution
    new_logp = jnp.take_along_axis(raw_logp, new[..., None], axis=2)[..., 0]
    logprob = s.logprob.at[rows[:, None], write_at].set(new_logp, mode="drop")
    length = s.length + n_keep
    forget = lambda c: kv_cache.forget_after(c, length - 2)  # caches hold everything but the newest token
    done = s.done | hit_eos | (length - s.prompt_length >= budget)
    return SpecState(target=forget(target_cache), draft=forget(draft_cache), history=history, logprob=logprob,
                     length=length,
                     prompt_length=s.prompt_length, done=done, eos=s.eos | hit_eos,
                     proposed=s.proposed + jnp.where(active, gamma, 0),
                     accepted=s.accepted + jnp.where(active, n_ok, 0),
                     rounds=s.rounds + 1, key=s.key)


def _prefill(model, layers, tokens_BxP, lengths_B, capacity):
    """Cache every prompt token but the last (the first round feeds it)."""
    B, P = tokens_BxP.shape
    positions = jnp.broadcast_to(jnp.arange(P, dtype=jnp.int32), (B, P))
    cache = init_cache(model.config, B, capacity, per_layer=layers is not None)
    _, cache = model.extend(tokens_BxP, positions, cache, valid_BxT=positions < lengths_B[:, None] - 1, fresh=True,
                            layers=layers)
    return cache


@functools.partial(jax.jit, static_argnames=("target_def", "draft_def", "gamma", "sampling", "eos_id", "budget",
                                             "vocab_limit", "capacity", "history_len"))
def _speculate(target_def, target_params, draft_def, draft_params, tokens_BxP, lengths_B, key, *, gamma, sampling,
               eos_id, budget, vocab_limit, capacity, history_len):
    target, draft = nnx.merge(target_def, target_params), nnx.merge(draft_def, draft_params)
    B, P = tokens_BxP.shape
    history = jnp.zeros((B, history_len), jnp.int32).at[:, :P].set(tokens_BxP)
    zeros = jnp.zeros((B,), jnp.int32)
    layers = (decode_layers(target), decode_layers(draft))
    state = SpecState(target=_prefill(target, layers[0], tokens_BxP, lengths_B, capacity),
                      draft=_prefill(draft, layers[1], tokens_BxP, lengths_B, capacity), history=history,
                      logprob=jnp.zeros((B, history_len), jnp.float32), length=lengths_B,
                      prompt_length=lengths_B, done=jnp.zeros((B,), bool), eos=jnp.zeros((B,), bool),
                      proposed=zeros, accepted=zeros, rounds=jnp.zeros((), jnp.int32), key=key)
    step = functools.partial(_round, target, draft, layers, gamma=gamma, sampling=sampling, eos_id=eos_id, budget=budget,
                             vocab_limit=vocab_limit)
    return jax.lax.while_loop(lambda s: ~jnp.all(s.done), step, state)


def check_draft(target, draft) -> None:
    t, d = target.config, draft.config
    if t.vocab_size != d.vocab_size:
        raise ConfigError(f"draft model: vocab_size {d.vocab_size} differs from the target's {t.vocab_size}; "
                          "speculative decoding needs the same tokenizer")
    for model, name in ((target, "target"), (draft, "draft")):
        c = model.config
        if not c.architecture.plain_decoder or "M" in c.layer_pattern or c.attention.kind != "softmax":
            raise ConfigError(f"speculative decoding needs softmax-attention decoders (recurrent states cannot be "
                              f"rolled back); the {name} model has arch={c.arch}, layer_pattern={c.layer_pattern!r}, "
                              f"attention_kind={c.attention.kind}")


def speculative_generate(target, draft, prompt_ids, *, max_new_tokens: int, gamma: int = 4,
                         sampling: SamplingConfig | None = None, eos_id: int | None = None, seed: int = 0,
                         context_len: int | None = None, truncate: bool = False, pad_id: int = 0,
                         vocab_limit: int | None = None) -> GenerationOutput:
    """Generate with `target`, proposing `gamma` tokens per round with `draft` (see the module docstring).
    `stats` has the acceptance rate (accepted / proposed draft tokens) and the number of rounds."""
    sampling = SamplingConfig(temperature=0.0) if sampling is None else sampling
    check_draft(target, draft)
    if not sampling.warp_only():
        raise ConfigError("speculative decoding supports temperature, top_k, top_p and min_p; "
                          "repetition/presence/frequency penalties and no_repeat_ngram are not supported")
    if not isinstance(gamma, int) or isinstance(gamma, bool) or gamma < 1:
        raise ConfigError(f"draft_tokens (gamma) must be an integer >= 1, got {gamma!r}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    context = min(context_length(target.config, context_len), context_length(draft.config, context_len))
    prompts = pack_prompts(prompt_ids, context_len=context, pad_id=pad_id, truncate=truncate)
    budget = int(min(max_new_tokens, context - prompts.lengths_B.max()))
    total = int(prompts.lengths_B.max()) + budget
    target_def, target_params = nnx.split(target)
    draft_def, draft_params = nnx.split(draft)
    t0 = time.perf_counter()
    s = _speculate(target_def, target_params, draft_def, draft_params, jnp.asarray(prompts.tokens_BxP),
                   jnp.asarray(prompts.lengths_B), jax.random.key(seed), gamma=gamma, sampling=sampling,
                   eos_id=eos_id, budget=budget, vocab_limit=vocab_limit, capacity=total + gamma + 1,
                   history_len=total + gamma + 1)
    history, length, prompt_length = np.asarray(s.history), np.asarray(s.length), np.asarray(s.prompt_length)
    eos, logprob = np.asarray(s.eos), np.asarray(s.logprob)
    tokens, reasons, token_logprobs = [], [], []
    for b in range(history.shape[0]):
        ids = history[b, prompt_length[b] : length[b]].tolist()
        token_logprobs.append(logprob[b, prompt_length[b] : length[b]].tolist())
        tokens.append(ids[:-1] if eos[b] else ids)
        reasons.append("eos" if eos[b] else ("length" if budget >= max_new_tokens else "context"))
    proposed = int(np.asarray(s.proposed).sum())
    stats = {"seconds": time.perf_counter() - t0, "rounds": int(s.rounds), "proposed": proposed,
             "acceptance_rate": int(np.asarray(s.accepted).sum()) / max(proposed, 1)}
    return GenerationOutput(tokens=tokens, finish_reasons=reasons, logprobs=[float(sum(t)) for t in token_logprobs],
                            stats=stats, token_logprobs=token_logprobs)
