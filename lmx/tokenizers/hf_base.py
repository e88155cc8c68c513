"""The shared base of every tokenizer backed by a Hugging Face `tokenizers.Tokenizer` (tokenizer.json).

Special tokens are the backend's added tokens marked special; `encode` never produces them from
text (`encode_special_tokens = True`), `decode` drops them. What each id stands for as bytes
(`piece_bytes`) is read off the model and decoder types in the JSON definition, so it also works for
external tokenizer.json files: ByteLevel alphabets map back to bytes, `<0xNN>` byte-fallback pieces
are one byte, Metaspace `▁` is a space and WordPiece/BPE subword prefixes are dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence

import tokenizers
from tokenizers import normalizers, pre_tokenizers

from lmx.errors import ConfigError, DataError
from lmx.tokenizers.base import Tokenizer

BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
METASPACE = "\u2581"
# GPT-2's pre-tokenization regex without the byte mapping: words, numbers, punctuation runs and
# whitespace runs (a space stays attached to the following word); every character lands in a piece.
WORD_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def byte_piece(b: int) -> str:
    """The byte-fallback piece for byte `b`: `<0x41>`."""
    return f"<0x{b:02X}>"


def byte_level_decoder() -> dict[str, int]:
    """The inverse of GPT-2's byte -> printable character map used by the ByteLevel pre-tokenizer."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, n = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + n)] = b
            n += 1
    return chars


_BYTE_LEVEL = byte_level_decoder()


def normalizer_for(normalization: str):
    """The `tokenizers` normalizer for data.normalization, or None for none."""
    return {"none": None, "nfc": normalizers.NFC(), "nfkc": normalizers.NFKC()}[normalization]


def word_splitter() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Split(tokenizers.Regex(WORD_PATTERN), behavior="isolated")


class HFTokenizer(Tokenizer):
    """Wraps a `tokenizers.Tokenizer`; subclasses add training and a structural check on load."""

    definition_file = "tokenizer.json"

    def __init__(self, backend: tokenizers.Tokenizer):
        backend.encode_special_tokens = True  # "<|eos|>" typed in text stays text (not serialised: set here)
        self._tok = backend
        self._encode_batch = getattr(backend, "encode_batch_fast", backend.encode_batch)

    @property
    def backend(self) -> tokenizers.Tokenizer:
        return self._tok

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def special_ids(self) -> dict[str, int]:
        cached = getattr(self, "_special_ids", None)
        if cached is None:
            added = self._tok.get_added_tokens_decoder()
            cached = {added[i].content: i for i in sorted(added) if added[i].special}
            self._special_ids = cached
        return dict(cached)

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
    def from_definition(cls, text: str, source: str) -> HFTokenizer:
        tok = cls(backend_from_str(text, source))
        tok.check(source)
        return tok

    def check(self, source: str) -> None:
        """Raise DataError if the loaded definition is not of this kind (subclasses override)."""

    def piece(self, token_id: int) -> str:
        return self._tok.id_to_token(token_id) or ""

    def piece_bytes(self) -> list[bytes]:
        cached = getattr(self, "_piece_bytes_cache", None)
        if cached is None:
            cached = hf_piece_bytes(self._tok, set(self.special_ids.values()))
            self._piece_bytes_cache = cached
        return cached


def backend_from_str(text: str, source: str) -> tokenizers.Tokenizer:
    try:
        return tokenizers.Tokenizer.from_str(text)
    except Exception as exc:  # the Rust side raises a bare Exception on malformed JSON
        reason = " ".join(str(exc).split())[:200]
        raise DataError(f"data.tokenizer: {source} is not a valid tokenizers JSON file ({reason})") from None


def _flatten(component: dict | None) -> list[dict]:
    if not component:
        return []
    if component.get("type") == "Sequence":
        parts = component.get("decoders") or component.get("pretokenizers") or []
        return [leaf for part in parts for leaf in _flatten(part)]
    return [component]


def hf_piece_bytes(backend: tokenizers.Tokenizer, special: set[int]) -> list[bytes]:
    """The bytes each id decodes to, read off the model and decoder types (b"" for specials)."""
    spec = json.loads(backend.to_str())
    model = spec.get("model") or {}
    decoders = _flatten(spec.get("decoder"))
    types = {d.get("type") for d in decoders}
    byte_level = "ByteLevel" in types
    byte_fallback = bool(model.get("byte_fallback")) or "ByteFallback" in types
    metaspace = "Metaspace" in types or any(
        d.get("type") == "Replace" and d.get("content") == " " and METASPACE in json.dumps(d.get("pattern"))
        for d in decoders
    )
    prefix = model.get("continuing_subword_prefix") or ""
    suffix = model.get("end_of_word_suffix") or ""
    unk = model.get("unk_token")
    out = []
    for i in range(backend.get_vocab_size(with_added_tokens=True)):
        piece = backend.id_to_token(i)
        if piece is None or i in special or piece == unk:
            out.append(b"")
            continue
        if byte_fallback and (m := BYTE_PIECE.match(piece)):
            out.append(bytes([int(m.group(1), 16)]))
            continue
        if prefix and piece.startswith(prefix) and piece != prefix:
            piece = piece[len(prefix):]
        if suffix and piece.endswith(suffix):
            piece = piece[: -len(suffix)] + " "
        if metaspace:
            piece = piece.replace(METASPACE, " ")
        if byte_level:
            mapped = all(c in _BYTE_LEVEL for c in piece)  # else an added token: its own UTF-8
            out.append(bytes(_BYTE_LEVEL[c] for c in piece) if mapped else piece.encode("utf-8"))
        else:
            out.append(piece.encode("utf-8"))
    return out


def batched(texts: Iterable[str], size: int = 64) -> Iterator[list[str]]:
    batch = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def check_min_vocab(kind: str, vocab_size: int, minimum: int, what: str) -> None:
    if vocab_size < minimum:
        raise ConfigError(f"model.vocab_size: the {kind} tokenizer needs at least {minimum} ids ({what}), got {vocab_size}")
