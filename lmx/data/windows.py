"""Fixed-length training examples cut from a packed token stream.

Window i is `tokens[i*L : i*L + L + 1]` (stride L = seq_len, so each token is a target once); the final
partial window is dropped, unless the stream is shorter than one window, in which case the only
window is padded. An example holds int32 `inputs`, `targets`, `segment_ids`, `positions` and float32
`loss_mask`, all of shape [L]; see `make_example`.
"""

from __future__ import annotations

import numpy as np

from lmx.errors import DataError

EXAMPLE_KEYS = ("inputs", "targets", "loss_mask", "segment_ids", "positions")


def num_windows(n_tokens: int, seq_len: int) -> int:
    """Full windows of seq_len + 1 tokens at stride seq_len; 1 (padded) if the stream is shorter."""
    return max((n_tokens - 1) // seq_len, 1)


def make_example(window: np.ndarray, seq_len: int, eos_id: int, pad_id: int) -> dict[str, np.ndarray]:
    """Example from up to seq_len + 1 tokens; positions past the real tokens are padding.

    `targets` is `inputs` shifted left by one. `loss_mask` is 1 where the target is real. `segment_ids`
    numbers the documents seen in the window from 1 (a document's EOS belongs to it; a new id starts
    after each EOS in the inputs); `positions` counts from 0 at the window start and after each EOS.
    Padding has segment id 0, position 0 and pad_id as input and target.
    """
    window = np.asarray(window, dtype=np.int32)
    real = max(min(window.size, seq_len + 1) - 1, 0)  # inputs that have a real target
    inputs = np.full(seq_len, pad_id, np.int32)
    targets = np.full(seq_len, pad_id, np.int32)
    inputs[:real] = window[:real]
    targets[:real] = window[1 : real + 1]
    loss_mask = np.zeros(seq_len, np.float32)
    loss_mask[:real] = 1.0
    is_eos = inputs[:real] == eos_id
    eos_before = np.cumsum(is_eos) - is_eos  # EOS tokens strictly before each position
    segment_ids = np.zeros(seq_len, np.int32)
    segment_ids[:real] = 1 + eos_before
    index = np.arange(real, dtype=np.int32)
    starts_doc = np.ones(real, bool)
    starts_doc[1:] = is_eos[:-1]
    doc_start = np.maximum.accumulate(np.where(starts_doc, index, 0)) if real else index
    positions = np.zeros(seq_len, np.int32)
    positions[:real] = index - doc_start
    return {
        "inputs": inputs,
        "targets": targets,
        "loss_mask": loss_mask,
        "segment_ids": segment_ids,
        "positions": positions,
    }


class PackedWindows:
    """Random-access source (grain `RandomAccessDataSource` protocol) of examples over a token stream."""

    def __init__(self, tokens: np.ndarray, seq_len: int, eos_id: int, pad_id: int):
        if tokens.ndim != 1 or tokens.size < 2:
            raise DataError(f"data.corpus: a token stream needs at least 2 tokens, got {tokens.size}")
        self.tokens = tokens
        self.seq_len = seq_len
        self.eos_id = eos_id
        self.pad_id = pad_id
        self._len = num_windows(tokens.size, seq_len)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        index = int(index)
        if not 0 <= index < self._len:
            raise IndexError(f"window {index} out of range [0, {self._len})")
        start = index * self.seq_len
        window = self.tokens[start : start + self.seq_len + 1]
        return make_example(window, self.seq_len, self.eos_id, self.pad_id)

    def padding_example(self) -> dict[str, np.ndarray]:
        """An all-padding example (loss_mask 0) used to fill incomplete validation batches."""
        return make_example(np.zeros(0, np.int32), self.seq_len, self.eos_id, self.pad_id)

    def __repr__(self) -> str:
        return f"PackedWindows(tokens={self.tokens.size}, seq_len={self.seq_len}, windows={self._len})"
