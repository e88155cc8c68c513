"""Logits processors and warpers for sampling, all jittable (jax.numpy, float32).

`process_logits` applies, in Hugging Face transformers' order (processors, then warpers):
repetition penalty -> no-repeat n-gram -> presence/frequency penalties -> temperature -> top-k ->
top-p -> min-p. Masked-out tokens get `-inf`. Every setting lives in the static, hashable
`SamplingConfig`, so a disabled step is skipped by a Python `if` and costs nothing when jitted.

History conventions: `history_BxT` holds each row's prompt followed by its generated tokens,
left-aligned; position t of row b is valid when t < length_B[b] and generated when
prompt_length_B[b] <= t < length_B[b]. Entries at t >= length_B[b] are ignored whatever they hold.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from lmx.errors import ConfigError

# Float32 slack for the exact-boundary cases of top-p (cumulative probability) and min-p (log-ratio):
# a token that is mathematically on the boundary is treated as the rule says despite rounding.
_TOP_P_TOLERANCE = 1e-6
_MIN_P_LOG_TOLERANCE = 1e-5


def _is_real(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """Sampling settings; frozen and hashable so it can be a static argument of `jax.jit`.

    temperature 0 means greedy (argmax). top_k 0, top_p 1, min_p 0, repetition_penalty 1,
    presence/frequency penalty 0 and no_repeat_ngram 0 each turn their step off.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    no_repeat_ngram: int = 0

    def __post_init__(self):
        for name in (
            "temperature",
            "top_p",
            "min_p",
            "repetition_penalty",
            "presence_penalty",
            "frequency_penalty",
        ):
            value = getattr(self, name)
            if not _is_real(value):
                raise ConfigError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ConfigError(f"{name} must be finite, got {value!r}")
            object.__setattr__(self, name, float(value))
        for name in ("top_k", "no_repeat_ngram"):
            value = getattr(self, name)
            if not _is_int(value):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0 (0 means greedy), got {self.temperature}")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be >= 1 (0 turns it off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0.0 <= self.min_p < 1.0:
            raise ConfigError(f"min_p must be in [0, 1), got {self.min_p}")
        if self.repetition_penalty <= 0:
            raise ConfigError(
                f"repetition_penalty must be > 0 (1 turns it off), got {self.repetition_penalty}"
            )
        if self.no_repeat_ngram < 0:
            raise ConfigError(f"no_repeat_ngram must be >= 0 (0 turns it off), got {self.no_repeat_ngram}")

    @property
    def greedy(self) -> bool:
        """True when temperature is 0: `sample_token` takes the argmax."""
        return self.temperature == 0.0

    @property
    def uses_history(self) -> bool:
        """True when a penalty or the n-gram ban is on, so `process_logits` needs the token history."""
        return (
            self.repetition_penalty != 1.0
            or self.presence_penalty != 0.0
            or self.frequency_penalty != 0.0
            or self.no_repeat_ngram > 0
        )

    def warp_only(self) -> bool:
        """True when the logits are only warped (no history-dependent step), as speculative decoding needs."""
        return not self.uses_history


def log_softmax_safe(logits_BxV: jax.Array) -> jax.Array:
    """log_softmax over the last axis; a row that is entirely -inf stays -inf instead of becoming NaN."""
    logits_BxV = logits_BxV.astype(jnp.float32)
    max_Bx1 = jnp.max(logits_BxV, axis=-1, keepdims=True)
    finite_Bx1 = jnp.isfinite(max_Bx1)
    shifted_BxV = logits_BxV - jnp.where(finite_Bx1, max_Bx1, 0.0)
    lse_Bx1 = jnp.log(jnp.sum(jnp.exp(shifted_BxV), axis=-1, keepdims=True))
    return jnp.where(finite_Bx1, shifted_BxV - lse_Bx1, -jnp.inf)


def _scatter_rows(values_BxT: jax.Array, tokens_BxT: jax.Array, vocab: int, op: str) -> jax.Array:
    """[B, V] float32 array where entry (b, v) combines (by `op`: "max" or "add") values[b, t] over t with
    tokens[b, t] == v. Out-of-range token ids are dropped (their values must be 0 to be harmless)."""
    batch = tokens_BxT.shape[0]
    rows_Bx1 = jnp.arange(batch)[:, None]
    # Negative ids would wrap around; send every out-of-range id to `vocab`, which "drop" discards.
    tokens_BxT = jnp.where((tokens_BxT >= 0) & (tokens_BxT < vocab), tokens_BxT, vocab)
    target = jnp.zeros((batch, vocab), jnp.float32).at[rows_Bx1, tokens_BxT]
    values_BxT = values_BxT.astype(jnp.float32)
    return target.max(values_BxT, mode="drop") if op == "max" else target.add(values_BxT, mode="drop")


def _positions_before(length_B: jax.Array, steps: int) -> jax.Array:
    """[B, T] bool mask: t < length[b]."""
    return jnp.arange(steps)[None, :] < length_B[:, None]


def apply_repetition_penalty(logits_BxV, history_BxT, history_valid_BxT, penalty: float):
    """CTRL repetition penalty (Keskar et al. 2019, arXiv:1909.05858) as in Hugging Face transformers'
    RepetitionPenaltyLogitsProcessor: for each token id seen anywhere in the valid history (prompt and
    generated tokens, counted once), a logit > 0 is divided by `penalty` and a logit <= 0 multiplied."""
    if penalty == 1.0:
        return logits_BxV
    logits_BxV = logits_BxV.astype(jnp.float32)
    seen_BxV = _scatter_rows(history_valid_BxT, history_BxT, logits_BxV.shape[-1], "max") > 0
    penalized_BxV = jnp.where(logits_BxV > 0, logits_BxV / penalty, logits_BxV * penalty)
    return jnp.where(seen_BxV, penalized_BxV, logits_BxV)


def apply_presence_frequency(logits_BxV, history_BxT, generated_BxT_mask, presence: float, frequency: float):
    """OpenAI API presence/frequency penalties over the GENERATED tokens only (not the prompt):
    logit[j] -= presence * (count[j] > 0) + frequency * count[j], count[j] = occurrences of j."""
    if presence == 0.0 and frequency == 0.0:
        return logits_BxV
    logits_BxV = logits_BxV.astype(jnp.float32)
    count_BxV = _scatter_rows(generated_BxT_mask, history_BxT, logits_BxV.shape[-1], "add")
    return logits_BxV - presence * (count_BxV > 0).astype(jnp.float32) - frequency * count_BxV


def apply_no_repeat_ngram(logits_BxV, history_BxT, length_B, n: int):
    """Hugging Face transformers' NoRepeatNGramLogitsProcessor over history[b, :length[b]]: if the last
    n-1 tokens equal history[j : j+n-1] for some j with j+n-1 < length, token history[j+n-1] gets -inf
    (so no n-gram occurs twice). Rows with length < n ban nothing; n == 1 bans every token seen."""
    if n <= 0:
        return logits_BxV
    logits_BxV = logits_BxV.astype(jnp.float32)
    batch, steps = history_BxT.shape
    starts = steps - n + 1  # candidate j = 0 .. T-n
    if starts <= 0:
        return logits_BxV
    # match_BxJ[b, j]: history[b, j+i] == history[b, length-(n-1)+i] for i < n-1.
    match_BxJ = jnp.ones((batch, starts), bool)
    for i in range(n - 1):
        tail_index_B = jnp.clip(length_B - (n - 1) + i, 0, steps - 1)
        tail_token_Bx1 = jnp.take_along_axis(history_BxT, tail_index_B[:, None], axis=1)
        match_BxJ = match_BxJ & (history_BxT[:, i : i + starts] == tail_token_Bx1)
    # j + n - 1 < length also implies length >= n, so short rows ban nothing.
    in_range_BxJ = (jnp.arange(starts)[None, :] + n - 1) < length_B[:, None]
    banned_BxV = _scatter_rows(match_BxJ & in_range_BxJ, history_BxT[:, n - 1 :], logits_BxV.shape[-1], "max")
    return jnp.where(banned_BxV > 0, -jnp.inf, logits_BxV)


def apply_temperature(logits_BxV, t: float):
    """logits / t for t > 0; t == 0 (greedy, handled by `sample_token`) and t == 1 leave logits unchanged."""
    logits_BxV = logits_BxV.astype(jnp.float32)
    if t == 0.0 or t == 1.0:
        return logits_BxV
    return logits_BxV / t


def apply_top_k(logits_BxV, k: int):
    """Keep the k largest logits per row, -inf elsewhere. Ties at the k-th largest value are all kept
    (a token is kept iff its logit >= the k-th largest logit). k <= 0 or k >= V is a no-op."""
    logits_BxV = logits_BxV.astype(jnp.float32)
    if k <= 0 or k >= logits_BxV.shape[-1]:
        return logits_BxV
    kth_Bx1 = jax.lax.top_k(logits_BxV, k)[0][:, -1:]
    return jnp.where(logits_BxV >= kth_Bx1, logits_BxV, -jnp.inf)


def apply_top_p(logits_BxV, p: float):
    """Nucleus sampling (Holtzman et al. 2020, arXiv:1904.09751): keep the smallest set of most probable
    tokens whose total probability is >= p (the top token always), -inf elsewhere. Equivalently, a token
    is kept iff the mass of the tokens sorted before it is < p (up to 1e-6 float32 slack); ties with the
    least probable kept token are kept too. p >= 1 is a no-op."""
    logits_BxV = logits_BxV.astype(jnp.float32)
    if p >= 1.0:
        return logits_BxV
    sorted_BxV = -jnp.sort(-logits_BxV, axis=-1)  # descending
    probs_BxV = jnp.exp(log_softmax_safe(sorted_BxV))
    mass_before_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV
    keep_BxV = mass_before_BxV < p - _TOP_P_TOLERANCE
    keep_BxV = keep_BxV.at[:, 0].set(True)
    kept_count_B = jnp.sum(keep_BxV, axis=-1)
    threshold_Bx1 = jnp.take_along_axis(sorted_BxV, (kept_count_B - 1)[:, None], axis=-1)
    return jnp.where(logits_BxV >= threshold_Bx1, logits_BxV, -jnp.inf)


def apply_min_p(logits_BxV, min_p: float):
    """Min-p sampling (Nguyen et al. 2024, arXiv:2407.01082): keep tokens with prob >= min_p * max prob
    of the current (temperature-scaled) logits, -inf elsewhere; done in log space as
    logit >= max logit + log(min_p) (with 1e-5 float32 slack). min_p == 0 is a no-op."""
    logits_BxV = logits_BxV.astype(jnp.float32)
    if min_p <= 0.0:
        return logits_BxV
    max_Bx1 = jnp.max(logits_BxV, axis=-1, keepdims=True)
    threshold_Bx1 = max_Bx1 + math.log(min_p) - _MIN_P_LOG_TOLERANCE
    return jnp.where(logits_BxV >= threshold_Bx1, logits_BxV, -jnp.inf)


def warp_logits(logits_BxV, cfg: SamplingConfig):
    """Temperature -> top-k -> top-p -> min-p, each only when enabled in `cfg` (Hugging Face's warpers)."""
    logits_BxV = apply_temperature(logits_BxV, cfg.temperature)
    if cfg.top_k > 0:
        logits_BxV = apply_top_k(logits_BxV, cfg.top_k)
    if cfg.top_p < 1.0:
        logits_BxV = apply_top_p(logits_BxV, cfg.top_p)
    if cfg.min_p > 0.0:
        logits_BxV = apply_min_p(logits_BxV, cfg.min_p)
    return logits_BxV


def process_logits(logits_BxV, cfg: SamplingConfig, history_BxT=None, length_B=None, prompt_length_B=None):
    """Repetition penalty -> no-repeat n-gram -> presence/frequency penalties -> `warp_logits`.

    history_BxT: prompt then generated tokens per row, left-aligned; length_B: valid tokens per row
    (default: all T); prompt_length_B: prompt tokens per row (needed for presence/frequency penalties).
    Raises ValueError when `cfg` needs a history that was not given.
    """
    logits_BxV = logits_BxV.astype(jnp.float32)
    if cfg.uses_history:
        if history_BxT is None:
            raise ValueError(
                "process_logits: this SamplingConfig uses penalties or no_repeat_ngram; pass history_BxT"
            )
        batch, steps = history_BxT.shape
        if length_B is None:
            length_B = jnp.full((batch,), steps, jnp.int32)
        valid_BxT = _positions_before(length_B, steps)
        if cfg.repetition_penalty != 1.0:
            logits_BxV = apply_repetition_penalty(logits_BxV, history_BxT, valid_BxT, cfg.repetition_penalty)
        if cfg.no_repeat_ngram > 0:
            logits_BxV = apply_no_repeat_ngram(logits_BxV, history_BxT, length_B, cfg.no_repeat_ngram)
        if cfg.presence_penalty != 0.0 or cfg.frequency_penalty != 0.0:
            if prompt_length_B is None:
                raise ValueError("process_logits: presence/frequency penalties need prompt_length_B")
            generated_BxT = valid_BxT & ~_positions_before(prompt_length_B, steps)
            logits_BxV = apply_presence_frequency(
                logits_BxV, history_BxT, generated_BxT, cfg.presence_penalty, cfg.frequency_penalty
            )
    return warp_logits(logits_BxV, cfg)


def sample_token(logits_BxV, cfg: SamplingConfig, rng) -> jax.Array:
    """Next token per row from already-processed logits: argmax when `cfg.greedy`, else a draw from
    softmax(logits) with `jax.random.categorical` (tokens at -inf are never drawn). Returns int32 [B]."""
    if cfg.greedy:
        return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
    return jax.random.categorical(rng, logits_BxV.astype(jnp.float32), axis=-1).astype(jnp.int32)
