"""The `byte_bpe` tokenizer: byte-level BPE (Hugging Face `tokenizers`) with <|eos|>=0, <|pad|>=1, <|bos|>=2.

Extra special tokens (data.special_tokens, data.num_sentinels) follow at 3, 4, ...; then the 256 byte
symbols of the ByteLevel alphabet (so any text round-trips), then merges. With the default settings
(no extra specials, no normalisation) the trained file is exactly what earlier versions wrote.
Special-token strings occurring in input text are encoded as ordinary text, never as special ids.
"""

from __future__ import annotations

from collections.abc import Iterable

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from lmx.errors import DataError
from lmx.tokenizers.base import SPECIAL_TOKENS, check_special_ids, special_token_list
from lmx.tokenizers.hf_base import HFTokenizer, batched, check_min_vocab, normalizer_for

MIN_VOCAB = len(SPECIAL_TOKENS) + 256


class ByteBPETokenizer(HFTokenizer):
    """Wraps a `tokenizers.Tokenizer` whose model is byte-level BPE."""

    kind = "byte_bpe"

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        special_tokens: Iterable[str] = (),
        num_sentinels: int = 0,
        normalization: str = "none",
    ) -> ByteBPETokenizer:
        """Train on `texts` (consumed once) for at most `vocab_size` ids, specials and 256 bytes included."""
        specials = special_token_list(tuple(special_tokens), num_sentinels)
        check_min_vocab(cls.kind, vocab_size, len(specials) + 256, "special tokens + 256 bytes")
        backend = tokenizers.Tokenizer(models.BPE())
        if (norm := normalizer_for(normalization)) is not None:
            backend.normalizer = norm
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=specials,
            show_progress=False,
        )
        backend.train_from_iterator(batched(texts, 64), trainer=trainer)
        tok = cls(backend)
        check_special_ids(tok, {t: i for i, t in enumerate(specials)}, "the trained tokenizer")
        return tok

    def check(self, source: str) -> None:
        ids = self.special_ids
        if [ids.get(t) for t in SPECIAL_TOKENS] != [0, 1, 2]:
            raise DataError(
                f"data.tokenizer: {source} has special tokens {ids}, expected <|eos|>=0, <|pad|>=1, <|bos|>=2"
            )
        if self.backend.model.__class__.__name__ != "BPE":
            raise DataError(f"data.tokenizer: {source} is not a byte-level BPE tokenizer")
