"""The `bytes` tokenizer: ids 0..255 are the UTF-8 bytes, then <|eos|>=256, <|pad|>=257, <|bos|>=258.

Extra special tokens (data.special_tokens, data.num_sentinels) take ids 259, 260, ...; with
data.normalization set, text is normalised (unicodedata) before encoding. With neither, the
definition (and so the fingerprint) is exactly the original one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from lmx.errors import DataError
from lmx.tokenizers.base import BOS, EOS, PAD, Tokenizer, normalize_text, special_token_list

_SPECIALS = {EOS: 256, PAD: 257, BOS: 258}
_DEFINITION = {"kind": "bytes", "version": 1, "byte_ids": [0, 256], "special_tokens": _SPECIALS}


class BytesTokenizer(Tokenizer):
    """Raw UTF-8 bytes; needs no training. Decoding replaces invalid UTF-8 with U+FFFD."""

    kind = "bytes"
    definition_file = "bytes.json"

    def __init__(self, special_tokens: Sequence[str] = (), num_sentinels: int = 0, normalization: str = "none"):
        extra = special_token_list(tuple(special_tokens), num_sentinels)[3:]
        self._specials = {**_SPECIALS, **{t: 259 + i for i, t in enumerate(extra)}}
        self._normalization = normalization
        self._definition = dict(_DEFINITION)
        if extra:
            self._definition["special_tokens"] = dict(self._specials)
        if normalization != "none":
            self._definition["normalization"] = normalization

    @property
    def vocab_size(self) -> int:
        return 256 + len(self._specials)

    @property
    def special_ids(self) -> dict[str, int]:
        return dict(self._specials)

    def _bytes(self, text: str) -> bytes:
        return normalize_text(text, self._normalization).encode("utf-8")

    def encode(self, text: str) -> list[int]:
        return np.frombuffer(self._bytes(text), np.uint8).tolist()

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def encode_arrays(self, texts: Sequence[str], dtype=np.int32) -> list[np.ndarray]:
        return [np.frombuffer(self._bytes(t), np.uint8).astype(dtype) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        arr = arr[(arr >= 0) & (arr < 256)]
        return arr.astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    def definition(self) -> str:
        return json.dumps(self._definition, sort_keys=True)

    @classmethod
    def from_definition(cls, text: str, source: str) -> BytesTokenizer:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"data.tokenizer: {source} is not valid JSON ({exc.msg})") from None
        specials = data.get("special_tokens") if isinstance(data, dict) else None
        extra = []
        if isinstance(specials, dict):
            extra = [t for t, _ in sorted(specials.items(), key=lambda kv: kv[1]) if t not in _SPECIALS]
        try:
            tok = cls(special_tokens=extra, normalization=data.get("normalization", "none"))
        except Exception:
            tok = None
        if tok is None or json.loads(tok.definition()) != data:
            raise DataError(
                f"data.tokenizer: {source} is not a definition of the bytes tokenizer this lmx knows"
            )
        return tok

    def piece_bytes(self) -> list[bytes]:
        return [bytes([i]) for i in range(256)] + [b""] * len(self._specials)

    def piece(self, token_id: int) -> str:
        if token_id < 256:
            return repr(bytes([token_id]))[2:-1]
        return {i: t for t, i in self._specials.items()}.get(token_id, "")
