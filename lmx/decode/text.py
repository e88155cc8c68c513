"""Text in, text out: `generate`, `beam_search_text`, `best_of_n`, `self_consistency`.

    completions = generate(model, tokenizer, ["def fib(n):"], max_new_tokens=64, temperature=0.8,
                           top_p=0.95, stop=["\\n\\n"], num_samples=4, seed=0)

Prompts are encoded with the tokenizer (an empty prompt becomes [EOS], the token that precedes every
document in training). Sampling keywords are the fields of `lmx.decode.logits.SamplingConfig`
(temperature 0 is greedy). Stop strings are matched on the decoded text, across token boundaries:
the text is cut exactly before the first completed stop string, and decoding runs in chunks of
`chunk` tokens so that a stopped row stops computing. `on_text(row, text)` streams each row's new
text as it is produced (held back while it could still be the start of a stop string). A `draft`
model turns on speculative decoding (lmx.decode.speculative); `beams` > 1 runs beam search.

Compute-amplifying strategies over samples:
    best_of_n         N samples, keep the one with the highest score: the mean log-probability of its
                      tokens under the model, or a user `scorer(completion) -> float`
    self_consistency  N samples, an answer extracted from each by a user function, majority vote
                      (Wang et al. 2023, arXiv:2203.11171); ties go to the answer seen first
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lmx.decode import engine as gen
from lmx.decode.beam import beam_search
from lmx.decode.logits import SamplingConfig
from lmx.decode.speculative import speculative_generate
from lmx.decode.stopping import TextStream, cut_at_stop, find_stop, validate_stops
from lmx.errors import ConfigError


@dataclasses.dataclass
class Completion:
    prompt: str
    text: str  # the continuation, cut before a stop string
    tokens: list[int]  # its tokens (through the one that completed a stop string; EOS excluded)
    finish_reason: str  # eos | stop | length | context
    logprob: float  # sum of the model's log-probabilities of the kept tokens (and of EOS)
    n_scored: int  # how many tokens logprob sums over
    stop_string: str | None = None
    score: float | None = None  # beam score / best-of-N score

    @property
    def mean_logprob(self) -> float:
        return self.logprob / max(self.n_scored, 1)


def encode_prompts(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    if isinstance(prompts, str):
        prompts = [prompts]
    return [tokenizer.encode(p) or [tokenizer.eos_id] for p in prompts]


def _sampling(kwargs: dict) -> SamplingConfig:
    fields = {f.name for f in dataclasses.fields(SamplingConfig)}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ConfigError(f"unknown generation option {unknown[0]!r}; sampling options are {', '.join(sorted(fields))}")
    return SamplingConfig(**kwargs)


def _tokens_through_stop(tokenizer, tokens: list[int], stops) -> list[int]:
    """The shortest prefix of `tokens` whose text contains a stop string."""
    for i in range(1, len(tokens) + 1):
        if find_stop(tokenizer.decode(tokens[:i]), stops) is not None:
            return tokens[:i]
    return tokens


def _completions(tokenizer, prompt_texts, out: gen.GenerationOutput, stops) -> list[Completion]:
    result = []
    for row, (tokens, reason) in enumerate(zip(out.tokens, out.finish_reasons)):
        text = tokenizer.decode(tokens)
        text, stop = cut_at_stop(text, stops) if stops else (text, None)
        logprobs = out.token_logprobs[row] if out.token_logprobs else []
        if stop is not None:
            tokens, reason = _tokens_through_stop(tokenizer, tokens, stops), "stop"
            logprobs = logprobs[: len(tokens)]
        result.append(Completion(prompt=prompt_texts[row], text=text, tokens=tokens, finish_reason=reason,
                                 logprob=float(sum(logprobs)), n_scored=len(logprobs), stop_string=stop))
    return result


class _Streamer:
    """Feeds each row's tokens from inside the compiled loop into a TextStream and `on_text`."""

    def __init__(self, tokenizer, rows: int, stops, on_text):
        self.streams = [TextStream(tokenizer.decode, stops, tokenizer.eos_id) for _ in range(rows)]
        self.on_text = on_text

    def __call__(self, tokens_B, active_B):
        for row, (token, active) in enumerate(zip(np.asarray(tokens_B), np.asarray(active_B))):
            if active and not self.streams[row].stopped:
                text = self.streams[row].push(int(token))
                if text and self.on_text is not None:
                    self.on_text(row, text)

    def flush(self):
        for row, stream in enumerate(self.streams):
            text = stream.finish()
            if text and self.on_text is not None:
                self.on_text(row, text)


def generate(model, tokenizer, prompts: str | Sequence[str], *, max_new_tokens: int = 128, num_samples: int = 1,
             seed: int = 0, stop: Sequence[str] = (), context_len: int | None = None, truncate: bool = False,
             on_text: Callable[[int, str], None] | None = None, chunk: int = 32, beams: int = 1,
             length_penalty: float = 1.0, early_stopping: bool = True, draft=None, draft_tokenizer=None,
             draft_tokens: int = 4, **sampling_options) -> list[Completion]:
    """Continue every prompt; returns len(prompts) * num_samples completions, grouped by prompt (for
    beam search: the `num_samples` best hypotheses per prompt). See the module docstring."""
    prompt_texts = [prompts] if isinstance(prompts, str) else list(prompts)
    stops = validate_stops(stop)
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
        raise ConfigError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    if beams != 1:
        return _beam(model, tokenizer, prompt_texts, beams, max_new_tokens, num_samples, stops, length_penalty,
                     early_stopping, sampling_options, draft, context_len, truncate)
    sampling = _sampling(sampling_options)
    rows_text = [p for p in prompt_texts for _ in range(num_samples)]
    ids = [i for i in encode_prompts(tokenizer, prompt_texts) for _ in range(num_samples)]
    vocab_limit = tokenizer.vocab_size
    if draft is not None:
        check_same_tokenizer(tokenizer, draft_tokenizer)
        out = speculative_generate(model, draft, ids, max_new_tokens=max_new_tokens, gamma=draft_tokens,
                                   sampling=sampling, eos_id=tokenizer.eos_id, seed=seed, context_len=context_len,
                                   truncate=truncate, pad_id=tokenizer.pad_id, vocab_limit=vocab_limit)
        completions = _completions(tokenizer, rows_text, out, stops)
        if on_text is not None:
            for row, c in enumerate(completions):
                on_text(row, c.text)
        return completions
    graphdef, params, state, _, _ = gen.start(model, ids, max_new_tokens=max_new_tokens, seed=seed,
                                              context_len=context_len, truncate=truncate, pad_id=tokenizer.pad_id)
    streamer = _Streamer(tokenizer, len(ids), stops, on_text) if on_text is not None else None
    step = max_new_tokens if not stops else max(1, int(chunk))
    limit = 0
    while True:
        limit = min(limit + step, max_new_tokens)
        state = gen.run_chunk(graphdef, params, state, jnp.int32(limit), sampling=sampling, eos_id=tokenizer.eos_id,
                              vocab_limit=vocab_limit, stream=streamer)
        done = np.asarray(state.done_B).copy()
        if stops:
            history, start, new = (np.asarray(a) for a in (state.history_BxT, state.prompt_length_B, state.new_B))
            for row in np.flatnonzero(~done):
                text = tokenizer.decode(history[row, start[row] : start[row] + new[row]].tolist())
                done[row] = find_stop(text, stops) is not None
            state = dataclasses.replace(state, done_B=jnp.asarray(done))
        if done.all() or limit >= max_new_tokens:
            break
    jax.block_until_ready(state.new_B)
    if streamer is not None:
        streamer.flush()
    return _completions(tokenizer, rows_text, gen.finish(state, max_new_tokens, tokenizer.eos_id), stops)


def check_same_tokenizer(tokenizer, draft_tokenizer) -> None:
    if draft_tokenizer is not None and draft_tokenizer.fingerprint != tokenizer.fingerprint:
        raise ConfigError(f"--draft-run: the draft model's tokenizer ({draft_tokenizer.fingerprint}) differs from "
                          f"the target's ({tokenizer.fingerprint}); speculative decoding needs the same tokenizer")


def _beam(model, tokenizer, prompt_texts, beams, max_new_tokens, num_return, stops, length_penalty, early_stopping,
          sampling_options, draft, context_len, truncate) -> list[Completion]:
    if sampling_options:
        raise ConfigError(f"beam search is deterministic; it does not take the sampling option "
                          f"{sorted(sampling_options)[0]} (use beams=1 to sample)")
    if draft is not None:
        raise ConfigError("beam search cannot be combined with a draft model (speculative decoding)")
    hyps = beam_search(model, encode_prompts(tokenizer, prompt_texts), beams=beams, max_new_tokens=max_new_tokens,
                       eos_id=tokenizer.eos_id, length_penalty=length_penalty, early_stopping=early_stopping,
                       num_return=num_return, context_len=context_len, truncate=truncate, pad_id=tokenizer.pad_id,
                       vocab_limit=tokenizer.vocab_size)
    out = []
    for prompt, prompt_hyps in zip(prompt_texts, hyps):
        for h in prompt_hyps:
            text, stop_string = cut_at_stop(tokenizer.decode(h.tokens), stops) if stops else (
                tokenizer.decode(h.tokens), None)
            reason = "stop" if stop_string else ("eos" if h.finished else "length")
            out.append(Completion(prompt=prompt, text=text, tokens=h.tokens, finish_reason=reason, logprob=h.logprob,
                                  n_scored=len(h.tokens) + h.finished, stop_string=stop_string, score=h.score))
    return out


def best_of_n(model, tokenizer, prompt: str, n: int, *, scorer: Callable[[Completion], float] | None = None,
              **options) -> tuple[Completion, list[Completion]]:
    """(best, all n samples sorted best first) by `scorer`, default the mean token log-probability."""
    samples = generate(model, tokenizer, [prompt], num_samples=n, **options)
    for sample in samples:
        sample.score = float(scorer(sample)) if scorer is not None else sample.mean_logprob
    ranked = sorted(samples, key=lambda c: -c.score)
    return ranked[0], ranked


@dataclasses.dataclass
class Vote:
    answer: object  # the majority answer (None when no sample had one)
    count: int
    votes: dict  # answer -> count
    completions: list[Completion]
    answers: list  # per completion (None: nothing extracted)


def self_consistency(model, tokenizer, prompt: str, n: int, extract: Callable[[str], object], **options) -> Vote:
    """Majority vote over the answers `extract(text)` of n samples (None = no answer, not counted)."""
    samples = generate(model, tokenizer, [prompt], num_samples=n, **options)
    answers = [extract(sample.text) for sample in samples]
    votes = collections.Counter(a for a in answers if a is not None)
    if not votes:
        return Vote(answer=None, count=0, votes={}, completions=samples, answers=answers)
    first_seen = {a: i for i, a in reversed(list(enumerate(answers))) if a is not None}
    answer = max(votes, key=lambda a: (votes[a], -first_seen[a]))
    return Vote(answer=answer, count=votes[answer], votes=dict(votes), completions=samples, answers=answers)
