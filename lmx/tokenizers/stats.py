"""How finely a tokenizer cuts text: tokens per byte, character and word (`lmx tokenizer inspect`)."""

from __future__ import annotations

import numpy as np

from lmx.tokenizers.base import Tokenizer


def text_stats(tok: Tokenizer, text: str) -> dict:
    """Tokens, bytes, characters and whitespace-separated words of `text`, and their ratios."""
    ids = tok.encode(text)
    n_bytes, n_chars, n_words = len(text.encode("utf-8")), len(text), len(text.split())
    arr = np.asarray(ids, np.int64)
    return {
        "tokens": len(ids),
        "bytes": n_bytes,
        "chars": n_chars,
        "words": n_words,
        "tokens_per_byte": len(ids) / n_bytes if n_bytes else float("nan"),
        "tokens_per_char": len(ids) / n_chars if n_chars else float("nan"),
        "tokens_per_word": len(ids) / n_words if n_words else float("nan"),
        "bytes_accounted": int(tok.token_bytes[arr].sum()) if ids else 0,
        "chars_accounted": int(tok.token_chars[arr].sum()) if ids else 0,
        "round_trip": tok.decode(ids) == text,
        "ids": ids,
    }
