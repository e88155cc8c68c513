"""Held-out loss, perplexity, bits per byte and bits per character from summed negative log-likelihoods.

loss = sum nll / tokens (nats per token), perplexity = exp(loss), and
bits per byte = sum nll / (ln 2 * bytes), where bytes counts the UTF-8 bytes the target tokens
stand for (the tokenizer's `token_bytes`), so models with different tokenizers compare directly;
bits per char = sum nll / (ln 2 * chars) likewise with the tokenizer's `token_chars` (NaN when the
eval step was built without them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import jax


def summarize_eval_sums(nll: float, tokens: float, n_bytes: float, n_chars: float = 0.0) -> dict:
    loss = nll / max(tokens, 1.0)
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "bits_per_byte": nll / (math.log(2) * n_bytes) if n_bytes > 0 else float("nan"),
        "bits_per_char": nll / (math.log(2) * n_chars) if n_chars > 0 else float("nan"),
        "tokens": tokens,
        "bytes": n_bytes,
        "chars": n_chars,
    }


def evaluate(eval_step: Callable, params, batches: Iterable[dict]) -> dict:
    """Run `eval_step(params, batch) -> {nll, tokens, bytes[, chars]}` over batches and combine exactly."""
    totals = {"nll": 0.0, "tokens": 0.0, "bytes": 0.0, "chars": 0.0}
    for batch in batches:
        sums = jax.device_get(eval_step(params, batch))
        for key in totals:
            totals[key] += float(sums.get(key, 0.0))
    return summarize_eval_sums(totals["nll"], totals["tokens"], totals["bytes"], totals["chars"])
