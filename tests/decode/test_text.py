"""lmx.decode.text: stop strings across token boundaries, streaming, samples per prompt, best-of-N
and self-consistency, checked against lmx.decode.generate_tokens and references computed here.

The tokenizer is a tiny test tokenizer whose tokens are 1-3 character pieces, so that a stop string
can start in the middle of a token and end in a later one (impossible with one byte per token)."""

from __future__ import annotations

import collections
import functools

import numpy as np
import pytest
from flax import nnx

from lmx.decode import text as text_lib
from lmx.decode.engine import generate_tokens
from lmx.decode.logits import SamplingConfig
from lmx.errors import ConfigError
from lmx.nn import build_model
from tests.nn.helpers import tiny_config


class PieceTokenizer:
    """ids 0 = EOS, 1 = pad, then fixed text pieces; encode is a greedy longest match."""

    SINGLES = list("abcdefgh .")
    PAIRS = [x + y for x in "abcdefg" for y in "abcdefg"]
    PIECES = SINGLES + PAIRS + ["abc", "ded", "fag"]
    eos_id, pad_id = 0, 1
    fingerprint = "piece-tokenizer-v1"

    @property
    def vocab_size(self) -> int:
        return 2 + len(self.PIECES)

    def encode(self, text: str) -> list[int]:
        ids, i = [], 0
        while i < len(text):
            for size in (3, 2, 1):
                piece = text[i : i + size]
                if len(piece) == size and piece in self.PIECES:
                    ids.append(2 + self.PIECES.index(piece))
                    i += size
                    break
            else:
                raise ValueError(f"cannot encode {text[i]!r}")
        return ids

    def decode(self, ids) -> str:
        return "".join(self.PIECES[i - 2] for i in ids if i >= 2)


TOK = PieceTokenizer()
PROMPT = "abc de"
N = 24


@functools.cache
def _model():
    assert TOK.vocab_size <= 64
    return build_model(tiny_config(vocab_size=64, init_std=0.4), rngs=nnx.Rngs(2))


@functools.cache
def _reference():
    """The greedy continuation of PROMPT, token by token, with its per-token log-probabilities."""
    out = generate_tokens(_model(), [TOK.encode(PROMPT)], max_new_tokens=N, eos_id=TOK.eos_id,
                          vocab_limit=TOK.vocab_size, pad_id=TOK.pad_id)
    return out.tokens[0], out.token_logprobs[0], out.finish_reasons[0]


@functools.cache
def _stop_case():
    """(stop, start, last): a stop string that begins inside a multi-character token i of the greedy
    output and ends inside a later token `last`; `start` is where it first occurs in the text."""
    tokens, _, _ = _reference()
    pieces = [TOK.decode([t]) for t in tokens]
    offsets = np.cumsum([0] + [len(p) for p in pieces])
    full = "".join(pieces)
    for i in range(1, len(tokens) - 2):
        if len(pieces[i]) < 2:
            continue
        start = int(offsets[i]) + 1
        for last in range(i + 1, len(tokens)):
            end = int(offsets[last]) + 1  # through the first character of token `last`
            stop = full[start:end]
            if full.find(stop) == start and len(stop) >= 2:
                return stop, start, last
    raise AssertionError(f"no usable stop string in {pieces}")


def test_reference_is_long_enough():
    tokens, _, reason = _reference()
    assert reason == "length" and len(tokens) == N
    assert len(set(tokens)) > 3 and any(len(TOK.decode([t])) > 1 for t in tokens)


@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_stop_string_across_tokens(chunk):
    tokens, token_logprobs, _ = _reference()
    stop, start, last = _stop_case()
    full = TOK.decode(tokens)
    streamed = []
    got = text_lib.generate(_model(), TOK, [PROMPT], max_new_tokens=N, temperature=0.0, stop=[stop, "zzz"],
                            chunk=chunk, on_text=lambda row, t: streamed.append((row, t)))
    assert len(got) == 1
    c = got[0]
    assert c.text == full[:start]
    assert c.finish_reason == "stop" and c.stop_string == stop
    assert c.tokens == tokens[: last + 1]
    assert stop not in TOK.decode(c.tokens[:-1]) and stop in TOK.decode(c.tokens)
    assert c.logprob == pytest.approx(sum(token_logprobs[: last + 1]), abs=1e-5)
    assert c.n_scored == last + 1
    assert "".join(t for _, t in streamed) == c.text and {r for r, _ in streamed} <= {0}


def test_chunks_agree():
    stop = _stop_case()[0]
    results = [text_lib.generate(_model(), TOK, [PROMPT, "gg"], max_new_tokens=N, temperature=0.0, stop=[stop],
                                 chunk=chunk) for chunk in (1, 4, 64)]
    assert results[0] == results[1] == results[2]


def test_no_stop_matches_generate_tokens_and_streams():
    tokens, token_logprobs, _ = _reference()
    streamed = collections.defaultdict(str)
    c = text_lib.generate(_model(), TOK, PROMPT, max_new_tokens=N, temperature=0.0,
                          on_text=lambda row, t: streamed.__setitem__(row, streamed[row] + t))[0]
    assert c.tokens == tokens and c.text == TOK.decode(tokens)
    assert c.finish_reason == "length" and c.stop_string is None
    assert c.logprob == pytest.approx(sum(token_logprobs), abs=1e-5)
    assert dict(streamed) == {0: c.text}


def test_num_samples_grouped_by_prompt_and_streamed():
    prompts = ["abc de", "gg"]
    streamed = collections.defaultdict(str)
    got = text_lib.generate(_model(), TOK, prompts, max_new_tokens=10, num_samples=3, temperature=1.0, seed=4,
                            on_text=lambda row, t: streamed.__setitem__(row, streamed[row] + t))
    assert [c.prompt for c in got] == ["abc de"] * 3 + ["gg"] * 3
    ids = [TOK.encode(p) for p in prompts for _ in range(3)]
    ref = generate_tokens(_model(), ids, max_new_tokens=10, sampling=SamplingConfig(temperature=1.0), seed=4,
                          eos_id=TOK.eos_id, vocab_limit=TOK.vocab_size, pad_id=TOK.pad_id)
    assert [c.tokens for c in got] == ref.tokens
    assert len({tuple(c.tokens) for c in got}) > 1  # samples differ
    for row, c in enumerate(got):
        assert streamed.get(row, "") == c.text
        assert c.logprob == pytest.approx(ref.logprobs[row], abs=1e-5)


def test_best_of_n():
    options = dict(max_new_tokens=8, temperature=1.0, seed=7)
    samples = text_lib.generate(_model(), TOK, [PROMPT], num_samples=5, **options)
    best, ranked = text_lib.best_of_n(_model(), TOK, PROMPT, 5, **options)
    assert len(ranked) == 5 and best is ranked[0]
    assert sorted(c.text for c in ranked) == sorted(c.text for c in samples)
    means = [c.logprob / max(c.n_scored, 1) for c in ranked]
    assert [c.score for c in ranked] == pytest.approx(means)
    assert means == sorted(means, reverse=True)
    assert best.score == pytest.approx(max(s.logprob / max(s.n_scored, 1) for s in samples))
    best, ranked = text_lib.best_of_n(_model(), TOK, PROMPT, 5, scorer=lambda c: -len(c.text), **options)
    assert [c.score for c in ranked] == sorted((-len(s.text) for s in samples), reverse=True)
    assert len(best.text) == min(len(s.text) for s in samples)


def _majority(answers):
    """Reference vote: most frequent non-None answer, ties to the one that appears first."""
    counted = [a for a in answers if a is not None]
    if not counted:
        return None, 0
    counts = collections.Counter(counted)
    top = max(counts.values())
    winner = next(a for a in counted if counts[a] == top)
    return winner, top


def test_self_consistency_first_character():
    options = dict(max_new_tokens=6, temperature=1.5, seed=1)
    vote = text_lib.self_consistency(_model(), TOK, PROMPT, 9, lambda t: t[:1] or None, **options)
    samples = text_lib.generate(_model(), TOK, [PROMPT], num_samples=9, **options)
    answers = [s.text[:1] or None for s in samples]
    assert vote.answers == answers
    assert (vote.answer, vote.count) == _majority(answers)
    assert vote.votes == dict(collections.Counter(a for a in answers if a is not None))


@pytest.mark.parametrize("script, expected", [
    (["b", "a", None, "a", "b"], ("b", 2)),  # tie: b was seen first
    ([None, "a", "b", "b", None], ("b", 2)),  # None is not an answer
    ([None, None, None, None, None], (None, 0)),
])
def test_self_consistency_ties_and_none(script, expected):
    feed = iter(script)
    vote = text_lib.self_consistency(_model(), TOK, PROMPT, len(script), lambda _t: next(feed), max_new_tokens=2,
                                     temperature=1.0)
    assert (vote.answer, vote.count) == expected == _majority(script)
    assert vote.answers == script


def test_errors():
    with pytest.raises(ConfigError, match="temprature"):
        text_lib.generate(_model(), TOK, [PROMPT], max_new_tokens=2, temprature=0.5)
    with pytest.raises(ConfigError, match="non-empty"):
        text_lib.generate(_model(), TOK, [PROMPT], max_new_tokens=2, stop=["x", ""])
