"""Host-side (numpy) training objectives: one packed example in, the arrays an architecture trains on out.

Every objective is a pure function `objective(example, rng, **options) -> dict[str, np.ndarray]` of a
packed example (`lmx.data.windows.make_example`: `inputs`, `targets`, `loss_mask`, `segment_ids`,
`positions`, each [L]) and a `np.random.Generator`; it never mutates `example` and draws all randomness
from `rng`, so the same (example, seed) always gives the same output. `make_objective(name, ...)`
binds the options and returns a `(example, rng) -> dict` callable that grain's
`MapDataset.random_map` applies with a per-index generator, which keeps the iterator state resumable.
`example_rng(seed, index)` gives the same kind of per-index generator outside grain.

causal_lm        the example unchanged (next-token prediction)
mlm              BERT masked LM (Devlin et al. 2019, sec. 3.1)
prefix_lm        prefix LM: a random prefix is seen bidirectionally, loss on the suffix
                 (Raffel et al. 2020, sec. 3.2.1)
span_corruption  T5 span corruption to encoder/decoder arrays (Raffel et al. 2020, sec. 3.1.4)

The exact array layouts are in docs/objectives.md.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import numpy as np

from lmx.data.windows import EXAMPLE_KEYS
from lmx.errors import ConfigError

Example = dict[str, np.ndarray]


def example_rng(seed: int, index: int) -> np.random.Generator:
    """A generator determined by (seed, index) alone: the per-example rng outside grain."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))


def _real_length(example: Example) -> int:
    """Inputs that are real tokens (make_example puts them first; the rest is padding)."""
    return int(np.count_nonzero(example["loss_mask"]))


# --- causal_lm ----------------------------------------------------------------------------------
def causal_lm(example: Example, rng: np.random.Generator | None = None) -> Example:
    """Next-token prediction: a copy of the example's five arrays, unchanged (`rng` is unused)."""
    return {key: np.array(example[key], copy=True) for key in EXAMPLE_KEYS}


# --- mlm ----------------------------------------------------------------------------------------
def _non_special_ids(ranks: np.ndarray, excluded_sorted: np.ndarray) -> np.ndarray:
    """The ranks-th ids (0-based) of [0, vocab) that are not in `excluded_sorted` (sorted, unique)."""
    # id of rank r = r + #{j : excluded[j] - j <= r}
    shifted = excluded_sorted - np.arange(excluded_sorted.size)
    return ranks + np.searchsorted(shifted, ranks, side="right")


def mlm(
    example: Example,
    rng: np.random.Generator,
    *,
    mask_id: int,
    vocab_size: int,
    special_ids: Iterable[int],
    mask_rate: float = 0.15,
    replace_probs: Sequence[float] = (0.8, 0.1, 0.1),
) -> Example:
    """BERT masked LM over the L `inputs` of the window.

    Eligible positions are real inputs (loss_mask 1) whose token is not in `special_ids`. Exactly
    k = max(1, rint(mask_rate * n_eligible)) of them (0 if none is eligible) are chosen uniformly without
    replacement; each chosen position independently becomes `mask_id` with probability replace_probs[0],
    a random token with probability replace_probs[1] (uniform over the ids in [0, vocab_size) that are
    neither in `special_ids` nor `mask_id`; it may equal the original), and stays unchanged otherwise.
    Returns `inputs` (corrupted), `targets` (the original inputs, everywhere), `loss_mask` (1.0 exactly
    on the chosen positions), and `segment_ids`, `positions` unchanged.
    """
    probs = np.asarray(replace_probs, np.float64)
    if probs.shape != (3,) or (probs < 0).any() or not np.isclose(probs.sum(), 1.0):
        raise ConfigError(f"mlm.replace_probs: need 3 non-negative probabilities summing to 1, got {replace_probs}")
    if not 0.0 < mask_rate <= 1.0:
        raise ConfigError(f"mlm.mask_rate: must be in (0, 1], got {mask_rate}")
    excluded = np.unique(np.asarray([*special_ids, mask_id], np.int64))
    excluded = excluded[(excluded >= 0) & (excluded < vocab_size)]
    n_random_ids = vocab_size - excluded.size
    if n_random_ids < 1:
        raise ConfigError(f"mlm.vocab_size: {vocab_size} leaves no non-special token to sample")

    original = np.asarray(example["inputs"], np.int32)
    eligible = np.flatnonzero((np.asarray(example["loss_mask"]) > 0) & ~np.isin(original, excluded))
    n_chosen = max(1, int(np.rint(mask_rate * eligible.size))) if eligible.size else 0
    chosen = np.sort(rng.choice(eligible, size=n_chosen, replace=False)) if n_chosen else eligible[:0]
    action = rng.random(n_chosen)
    random_tokens = _non_special_ids(rng.integers(0, n_random_ids, size=n_chosen), excluded)

    inputs = original.copy()
    to_mask = action < probs[0]
    to_random = ~to_mask & (action < probs[0] + probs[1])
    inputs[chosen[to_mask]] = mask_id
    inputs[chosen[to_random]] = random_tokens[to_random]
    loss_mask = np.zeros(original.shape, np.float32)
    loss_mask[chosen] = 1.0
    return {
        "inputs": inputs,
        "targets": original.copy(),
        "loss_mask": loss_mask,
        "segment_ids": np.array(example["segment_ids"], np.int32, copy=True),
        "positions": np.array(example["positions"], np.int32, copy=True),
    }


# --- prefix_lm ----------------------------------------------------------------------------------
def prefix_lm(example: Example, rng: np.random.Generator, *, prefix_fraction: float | None = None) -> Example:
    """Prefix LM: inputs 0..prefix_len-1 form the prefix; loss only where the predicted token is in the suffix.

    With n real inputs (n = L for a full window), `prefix_len` is drawn uniformly from [1, max(n-1, 1)],
    or, with `prefix_fraction` set, is clip(rint(prefix_fraction * n), 1, max(n-1, 1)) (no randomness).
    `targets[t]` is token t+1 of the window, so it is a suffix prediction iff t + 1 >= prefix_len:
    `loss_mask[t] = example loss_mask[t] * (t >= prefix_len - 1)`. inputs, targets, segment_ids,
    positions are unchanged; `prefix_len` is an int32 scalar counted in window indices 0..L-1 (not the
    per-document `positions`), for `lmx.nn.masks.prefix_lm` with key positions arange(L).
    """
    n = _real_length(example)
    hi = max(n - 1, 1)
    if prefix_fraction is None:
        prefix_len = int(rng.integers(1, hi, endpoint=True))
    else:
        if not 0.0 <= prefix_fraction <= 1.0:
            raise ConfigError(f"prefix_lm.prefix_fraction: must be in [0, 1], got {prefix_fraction}")
        prefix_len = int(np.clip(np.rint(prefix_fraction * n), 1, hi))
    out = causal_lm(example)
    suffix = np.arange(out["loss_mask"].size) + 1 >= prefix_len
    out["loss_mask"] = (out["loss_mask"] * suffix).astype(np.float32)
    out["prefix_len"] = np.asarray(prefix_len, np.int32)
    return out


# --- span_corruption ----------------------------------------------------------------------------
class SpanCorruptionLengths(NamedTuple):
    encoder_len: int  # longest encoder input (kept tokens + one sentinel per span + EOS)
    decoder_len: int  # longest decoder target (one sentinel per span + noise tokens + EOS)
    max_spans: int  # most noise spans, i.e. sentinels needed


def _span_counts(length: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    """(noise tokens, noise spans) of T5's random_spans_noise_mask for a sequence of `length` >= 2."""
    num_noise = int(np.rint(length * noise_density))
    num_noise = min(max(num_noise, 1), length - 1)
    num_spans = max(int(np.rint(num_noise / mean_span_length)), 1)
    return num_noise, num_spans


def _check_span_options(noise_density: float, mean_span_length: float) -> None:
    if not 0.0 < noise_density < 1.0:
        raise ConfigError(f"span_corruption.noise_density: must be in (0, 1), got {noise_density}")
    if not mean_span_length >= 1.0:
        raise ConfigError(f"span_corruption.mean_span_length: must be >= 1, got {mean_span_length}")


@functools.lru_cache(maxsize=64)
def span_corruption_lengths(
    seq_len: int, noise_density: float = 0.15, mean_span_length: float = 3.0
) -> SpanCorruptionLengths:
    """Static (encoder_len, decoder_len, max_spans): the maxima over every real length 1..seq_len.

    A sequence of n >= 2 tokens has noise = clip(rint(n * density), 1, n - 1) tokens in
    spans = max(rint(noise / mean_span_length), 1) spans: encoder n - noise + spans + 1, decoder
    noise + spans + 1. n = 1 has no noise (encoder 2, decoder 1), as in T5.
    """
    _check_span_options(noise_density, mean_span_length)
    if seq_len < 1:
        raise ConfigError(f"span_corruption: seq_len must be >= 1, got {seq_len}")
    enc, dec, spans = 2, 1, 0
    for n in range(2, seq_len + 1):
        noise, k = _span_counts(n, noise_density, mean_span_length)
        enc, dec, spans = max(enc, n - noise + k + 1), max(dec, noise + k + 1), max(spans, k)
    return SpanCorruptionLengths(enc, dec, spans)


def _random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Lengths (each >= 1, summing to num_items) of a uniformly random split into num_segments parts."""
    first_in_segment = np.zeros(num_items, bool)
    marks = np.arange(num_items - 1) < num_segments - 1
    first_in_segment[1:] = rng.permutation(marks)
    return np.bincount(np.cumsum(first_in_segment), minlength=num_segments)


def random_spans_noise_mask(
    length: int, rng: np.random.Generator, noise_density: float = 0.15, mean_span_length: float = 3.0
) -> np.ndarray:
    """bool [length]: T5's random_spans_noise_mask (Raffel et al. 2020; t5.data.preprocessors).

    The sequence (treated as length max(length, 2), then truncated) alternates non-noise and noise spans,
    starting with non-noise and ending with noise; the noise and non-noise lengths are each a uniformly
    random segmentation into the same number of spans (see `span_corruption_lengths` for the counts).
    """
    full = max(length, 2)
    num_noise, num_spans = _span_counts(full, noise_density, mean_span_length)
    noise_lengths = _random_segmentation(num_noise, num_spans, rng)
    nonnoise_lengths = _random_segmentation(full - num_noise, num_spans, rng)
    interleaved = np.stack([nonnoise_lengths, noise_lengths], axis=1).reshape(-1)
    is_noise = np.tile(np.array([False, True]), num_spans)
    return np.repeat(is_noise, interleaved)[:length]


def span_corruption(
    example: Example,
    rng: np.random.Generator,
    *,
    sentinel_ids: Sequence[int],
    eos_id: int,
    pad_id: int,
    noise_density: float = 0.15,
    mean_span_length: float = 3.0,
    decoder_start_id: int | None = None,
    encoder_len: int | None = None,
    decoder_len: int | None = None,
) -> Example:
    """T5 span corruption of the n real `inputs` of the window (n = L for a full window).

    With the noise mask of `random_spans_noise_mask` (spans Z_1..Z_k, kept runs N_1..N_k):
      encoder: N_1 s_0 N_2 s_1 ... N_k s_{k-1} EOS        (s_i = sentinel_ids[i])
      decoder targets: s_0 Z_1 s_1 Z_2 ... s_{k-1} Z_k EOS
      decoder inputs: decoder_start_id, then the targets shifted right by one
    each padded with `pad_id` to `encoder_len` / `decoder_len` (default: `span_corruption_lengths(L, ...)`,
    so shapes are static). Returns int32 `encoder_inputs` [E], float32 `encoder_valid` [E] (1.0 on real
    tokens), int32 `decoder_inputs` [D], int32 `decoder_targets` [D], float32 `decoder_loss_mask` [D]
    (1.0 on real targets). `decoder_start_id` defaults to `pad_id` (as in T5). An all-padding example
    gives all-padding arrays with zero masks.
    """
    _check_span_options(noise_density, mean_span_length)
    seq_len = int(np.asarray(example["inputs"]).shape[0])
    static = span_corruption_lengths(seq_len, noise_density, mean_span_length)
    encoder_len = static.encoder_len if encoder_len is None else int(encoder_len)
    decoder_len = static.decoder_len if decoder_len is None else int(decoder_len)
    if encoder_len < static.encoder_len or decoder_len < static.decoder_len:
        raise ConfigError(
            f"span_corruption: encoder_len/decoder_len {encoder_len}/{decoder_len} are below the "
            f"{static.encoder_len}/{static.decoder_len} that seq_len {seq_len} can need"
        )
    if len(sentinel_ids) < static.max_spans:
        raise ConfigError(
            f"span_corruption: seq_len {seq_len} can need {static.max_spans} sentinels, the tokenizer has "
            f"{len(sentinel_ids)} (raise data.num_sentinels)"
        )
    start_id = pad_id if decoder_start_id is None else decoder_start_id

    n = _real_length(example)
    tokens = np.asarray(example["inputs"], np.int32)[:n]
    noise = random_spans_noise_mask(n, rng, noise_density, mean_span_length) if n else np.zeros(0, bool)
    span_start = noise & ~np.concatenate([[False], noise[:-1]])
    sentinel_at = np.zeros(n, np.int32)  # sentinel_ids[i] at the first token of noise span i
    sentinel_at[span_start] = np.asarray(sentinel_ids, np.int32)[: int(span_start.sum())]
    # encoder: kept tokens, each noise span collapsed to its sentinel; decoder: sentinel, then the span
    encoder = np.where(span_start, sentinel_at, tokens)[~noise | span_start]
    pairs = np.stack([sentinel_at, tokens], axis=1).reshape(-1)
    decoder = pairs[np.stack([span_start, noise], axis=1).reshape(-1)]
    if n:
        encoder = np.append(encoder, np.int32(eos_id)).astype(np.int32)
        decoder = np.append(decoder, np.int32(eos_id)).astype(np.int32)

    out = {
        "encoder_inputs": np.full(encoder_len, pad_id, np.int32),
        "encoder_valid": np.zeros(encoder_len, np.float32),
        "decoder_inputs": np.full(decoder_len, pad_id, np.int32),
        "decoder_targets": np.full(decoder_len, pad_id, np.int32),
        "decoder_loss_mask": np.zeros(decoder_len, np.float32),
    }
    out["encoder_inputs"][: encoder.size] = encoder
    out["encoder_valid"][: encoder.size] = 1.0
    out["decoder_targets"][: decoder.size] = decoder
    out["decoder_loss_mask"][: decoder.size] = 1.0
    if decoder.size:
        out["decoder_inputs"][0] = start_id
        out["decoder_inputs"][1 : decoder.size] = decoder[:-1]
    return out


# --- registry -----------------------------------------------------------------------------------
OBJECTIVES: dict[str, Callable[..., Example]] = {
    "causal_lm": causal_lm,
    "mlm": mlm,
    "prefix_lm": prefix_lm,
    "span_corruption": span_corruption,
}

OBJECTIVE_KEYS: dict[str, tuple[str, ...]] = {
    "causal_lm": EXAMPLE_KEYS,
    "mlm": EXAMPLE_KEYS,
    "prefix_lm": (*EXAMPLE_KEYS, "prefix_len"),
    "span_corruption": ("encoder_inputs", "encoder_valid", "decoder_inputs", "decoder_targets", "decoder_loss_mask"),
}

_REQUIRED = {
    "causal_lm": (),
    "mlm": ("mask_id", "vocab_size", "special_ids"),
    "prefix_lm": (),
    "span_corruption": ("sentinel_ids", "eos_id", "pad_id"),
}


def _tokenizer_options(name: str, tokenizer) -> dict:
    """The id arguments of objective `name` read from a lmx.tokenizers.Tokenizer."""
    if name == "mlm":
        if tokenizer.mask_id is None:
            raise ConfigError("mlm: the tokenizer has no <|mask|> token (add it to data.special_tokens)")
        return {"mask_id": tokenizer.mask_id, "vocab_size": tokenizer.vocab_size,
                "special_ids": sorted(tokenizer.special_ids.values())}
    if name == "span_corruption":
        if not tokenizer.sentinel_ids:
            raise ConfigError("span_corruption: the tokenizer has no sentinels (set data.num_sentinels)")
        return {"sentinel_ids": tokenizer.sentinel_ids, "eos_id": tokenizer.eos_id, "pad_id": tokenizer.pad_id}
    return {}


def make_objective(name: str, tokenizer=None, **options) -> Callable[[Example, np.random.Generator], Example]:
    """`(example, rng) -> dict` for OBJECTIVES[name] with `options` bound (for grain's `random_map`).

    With a `tokenizer`, the ids the objective needs (mlm: mask_id, vocab_size, special_ids;
    span_corruption: sentinel_ids, eos_id, pad_id) come from it unless given in `options`; ConfigError
    if the tokenizer lacks <|mask|> or sentinels.
    """
    if name not in OBJECTIVES:
        raise ConfigError(f"objective: unknown {name!r}, expected one of {sorted(OBJECTIVES)}")
    if tokenizer is not None and any(k not in options for k in _REQUIRED[name]):
        options = {**_tokenizer_options(name, tokenizer), **options}
    absent = [k for k in _REQUIRED[name] if k not in options]
    if absent:
        raise ConfigError(f"objective {name}: missing {absent} (pass them or a tokenizer)")
    return functools.partial(OBJECTIVES[name], **options)


__all__ = [
    "OBJECTIVES", "OBJECTIVE_KEYS", "SpanCorruptionLengths", "causal_lm", "example_rng", "make_objective",
    "mlm", "prefix_lm", "random_spans_noise_mask", "span_corruption", "span_corruption_lengths",
]
