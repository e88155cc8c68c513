"""The `byte_bpe` tokenizer: byte-level BPE (Hugging Face `tokenizers`) with <|eos|>=0, <|pad|>=1, <|bos|>=2.

Ids 3..258 are the 256 byte symbols of the ByteLevel alphabet (so any text round-trips), then merges.
Special-token strings occurring in input text are encoded as ordinary text, never as special ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from lmx.data.tokenizer_base import SPECIAL_TOKENS, Tokenizer, check_special_ids
from lmx.errors import ConfigError, DataError

_SPECIALS = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
MIN_VOCAB = len(SPECIAL_TOKENS) + 256


class ByteBPETokenizer(Tokenizer):
    """Wraps a `tokenizers.Tokenizer` whose model is byte-level BPE."""

    kind = "byte_bpe"
    definition_file = "tokenizer.json"

    def __init__(self, backend: tokenizers.Tokenizer):
        backend.encode_special_tokens = True  # "<|eos|>" typed in text stays text (not serialised: set here)
        self._tok = backend
        self._encode_batch = getattr(backend, "encode_batch_fast", backend.encode_batch)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> ByteBPETokenizer:
        """Train on `texts` (consumed once) for at most `vocab_size` ids, specials and 256 bytes included."""
        if vocab_size < MIN_VOCAB:
            raise ConfigError(
                f"model.vocab_size: byte-level BPE needs at least {MIN_VOCAB} ids, got {vocab_size}"
            )
        backend = tokenizers.Tokenizer(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=list(SPECIAL_TOKENS),
            show_progress=False,
        )
        backend.train_from_iterator(_batched(texts, 64), trainer=trainer)
        tok = cls(backend)
        check_special_ids(tok, _SPECIALS, "the trained tokenizer")
        return tok

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def special_ids(self) -> dict[str, int]:
        return {token: self._tok.token_to_id(token) for token in SPECIAL_TOKENS}

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        ids = [int(i) for i in ids]
        return self._tok.decode([i for i in ids if 0 <= i < self.vocab_size], skip_special_tokens=True)

    def definition(self) -> str:
        return self._tok.to_str()

    @classmethod
    def from_definition(cls, text: str, source: str) -> ByteBPETokenizer:
        try:
            backend = tokenizers.Tokenizer.from_str(text)
        except Exception as exc:  # the Rust side raises a bare Exception on malformed JSON
            raise DataError(f"data.tokenizer: {source} is not a valid tokenizers JSON file ({exc})") from None
        tok = cls(backend)
        check_special_ids(tok, _SPECIALS, source)
        return tok

    def _piece_bytes(self) -> np.ndarray:
        # The ByteLevel alphabet maps each byte to one character, so a piece's length is its byte count.
        pieces = [self._tok.id_to_token(i) for i in range(self.vocab_size)]
        return np.array([len(p) if p is not None else 0 for p in pieces], np.int32)


def _batched(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    batch = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
