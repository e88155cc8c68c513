"""The `bytes` tokenizer: ids 0..255 are the UTF-8 bytes, then <|eos|>=256, <|pad|>=257, <|bos|>=258."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from lmx.data.tokenizer_base import BOS, EOS, PAD, Tokenizer
from lmx.errors import DataError

_SPECIALS = {EOS: 256, PAD: 257, BOS: 258}
_DEFINITION = {"kind": "bytes", "version": 1, "byte_ids": [0, 256], "special_tokens": _SPECIALS}


class BytesTokenizer(Tokenizer):
    """Raw UTF-8 bytes; needs no training. Decoding replaces invalid UTF-8 with U+FFFD."""

    kind = "bytes"
    definition_file = "bytes.json"

    @property
    def vocab_size(self) -> int:
        return 259

    @property
    def special_ids(self) -> dict[str, int]:
        return dict(_SPECIALS)

    def encode(self, text: str) -> list[int]:
        return np.frombuffer(text.encode("utf-8"), np.uint8).tolist()

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def encode_arrays(self, texts: Sequence[str], dtype=np.int32) -> list[np.ndarray]:
        return [np.frombuffer(t.encode("utf-8"), np.uint8).astype(dtype) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        arr = arr[(arr >= 0) & (arr < 256)]
        return arr.astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    def definition(self) -> str:
        return json.dumps(_DEFINITION, sort_keys=True)

    @classmethod
    def from_definition(cls, text: str, source: str) -> BytesTokenizer:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"data.tokenizer: {source} is not valid JSON ({exc.msg})") from None
        if data != json.loads(json.dumps(_DEFINITION)):
            raise DataError(
                f"data.tokenizer: {source} is not a definition of the bytes tokenizer this lmx knows"
            )
        return cls()

    def _piece_bytes(self) -> np.ndarray:
        return np.ones(self.vocab_size, np.int32)
