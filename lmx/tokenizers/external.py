"""Existing tokenizers read from local files: `data.tokenizer = "file:PATH"`. Nothing is downloaded.

- `*.json`: a Hugging Face `tokenizers` file (kind `hf_json`).
- `*.model`: a SentencePiece model (kind `sentencepiece`; needs the optional `sentencepiece` package).
- `*.tiktoken`: a tiktoken rank file, one `base64(token bytes) rank` per line (kind `tiktoken`),
  converted to an equivalent byte-level BPE `tokenizers` model (merges from the ranks); the
  pre-tokenization regex is the named encoding's for cl100k_base/o200k_base/p50k_base/r50k_base/gpt2
  file names, else GPT-2's.

lmx needs <|eos|>, <|pad|> and <|bos|> ids. A file's own end/pad/begin tokens are used when present
(`</s>`, `<|endoftext|>`, `[SEP]`, `<pad>`, `<s>`, `[CLS]`, ...); missing ones are appended after the
file's vocabulary as new special tokens, so the file's own ids never change.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from pathlib import Path

import tokenizers
from tokenizers import decoders, models, pre_tokenizers

from lmx.errors import DataError
from lmx.tokenizers.base import BOS, EOS, PAD, Tokenizer
from lmx.tokenizers.hf_base import HFTokenizer, backend_from_str, byte_level_decoder

FILE_PREFIX = "file:"
EXTERNAL_KINDS = {".json": "hf_json", ".model": "sentencepiece", ".tiktoken": "tiktoken"}
CANDIDATES = {
    EOS: (EOS, "</s>", "<|endoftext|>", "<eos>", "[SEP]", "<|end_of_text|>"),
    PAD: (PAD, "<pad>", "[PAD]", "<|padding|>"),
    BOS: (BOS, "<s>", "<bos>", "[CLS]", "<|begin_of_text|>", "<|startoftext|>"),
}
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
O200K_PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])
TIKTOKEN_PATTERNS = {"cl100k_base": CL100K_PATTERN, "o200k_base": O200K_PATTERN}


def external_kind(spec: str) -> str:
    """`file:x/tokenizer.json` -> hf_json (by extension); DataError for an unknown extension."""
    path = Path(spec[len(FILE_PREFIX):] if spec.startswith(FILE_PREFIX) else spec)
    kind = EXTERNAL_KINDS.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            f"data.tokenizer: cannot tell the format of {str(path)!r}; use a .json (Hugging Face tokenizers), "
            ".model (SentencePiece) or .tiktoken file"
        )
    return kind


def load_external(spec: str) -> Tokenizer:
    """Read `file:PATH` (or PATH); DataError naming data.tokenizer and the path if it is missing or unreadable."""
    kind = external_kind(spec)
    path = Path(spec[len(FILE_PREFIX):] if spec.startswith(FILE_PREFIX) else spec).expanduser()
    if not path.is_file():
        raise DataError(
            f"data.tokenizer: tokenizer file {str(path)!r} does not exist "
            "(external tokenizers are read from local files; nothing is downloaded)"
        )
    if kind == "sentencepiece":
        return SentencePieceTokenizer.from_model_bytes(path.read_bytes(), str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"data.tokenizer: cannot read {str(path)!r} ({exc})") from None
    if kind == "tiktoken":
        return TiktokenTokenizer.from_backend(tiktoken_backend(text, path.stem, str(path)), str(path))
    return ExternalHFTokenizer.from_backend(backend_from_str(text, repr(str(path))), str(path))


# --- tokenizer.json --------------------------------------------------------------------------------


class ExternalHFTokenizer(HFTokenizer):
    """A Hugging Face tokenizer.json used as is, with lmx's special tokens found or appended."""

    kind = "hf_json"

    @classmethod
    def from_backend(cls, backend: tokenizers.Tokenizer, source: str) -> ExternalHFTokenizer:
        vocab = backend.get_vocab(with_added_tokens=True)
        missing = [name for name, options in CANDIDATES.items() if not any(o in vocab for o in options)]
        if missing:
            backend.add_special_tokens(missing)
        tok = cls(backend)
        tok.check(source)
        return tok

    @property
    def special_ids(self) -> dict[str, int]:
        ids = super().special_ids
        vocab = self._tok.get_vocab(with_added_tokens=True)
        for name, options in CANDIDATES.items():
            found = next((o for o in options if o in vocab), None)
            if found is not None:
                ids[name] = vocab[found]
        return {EOS: ids.pop(EOS), PAD: ids.pop(PAD), BOS: ids.pop(BOS), **ids}

    def check(self, source: str) -> None:
        try:
            self.special_ids  # noqa: B018
        except KeyError:
            raise DataError(f"data.tokenizer: {source} lacks an end-of-sequence token") from None


class TiktokenTokenizer(ExternalHFTokenizer):
    """A tiktoken rank file converted to byte-level BPE."""

    kind = "tiktoken"


def tiktoken_ranks(text: str, source: str) -> dict[bytes, int]:
    ranks = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except (ValueError, binascii.Error):
            raise DataError(
                f"data.tokenizer: {source} line {n} is not `base64-token rank` (a tiktoken file)"
            ) from None
    if not ranks:
        raise DataError(f"data.tokenizer: {source} holds no tokens")
    return ranks


def tiktoken_backend(text: str, name: str, source: str) -> tokenizers.Tokenizer:
    """A byte-level BPE equivalent of a tiktoken rank file: merge priority = rank of the merged token."""
    ranks = tiktoken_ranks(text, source)
    to_char = {b: c for c, b in byte_level_decoder().items()}
    sym = lambda data: "".join(to_char[b] for b in data)
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise DataError(f"data.tokenizer: {source} lacks single-byte tokens (e.g. byte {missing[0]})")
    vocab = {sym(token): rank for token, rank in ranks.items()}
    merges = []
    for token, rank in ranks.items():
        for i in range(1, len(token)):
            left, right = token[:i], token[i:]
            if left in ranks and right in ranks and ranks[left] < rank and ranks[right] < rank:
                merges.append((rank, ranks[left], ranks[right], sym(left), sym(right)))
    merges.sort()
    model = models.BPE(vocab=vocab, merges=[(m[3], m[4]) for m in merges], ignore_merges=True)
    backend = tokenizers.Tokenizer(model)
    pattern = TIKTOKEN_PATTERNS.get(name, GPT2_PATTERN)
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    return backend


# --- SentencePiece -------------------------------------------------------------------------------


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model run by the `sentencepiece` package; its normalisation rules apply
    (by default NFKC and whitespace collapsing, so decode(encode(x)) may differ from x)."""

    kind = "sentencepiece"
    definition_file = "sentencepiece.json"

    def __init__(self, model: bytes, source: str):
        try:
            import sentencepiece  # optional dependency (lmx[sentencepiece]), only for .model files
        except ImportError:
            raise DataError(
                f"data.tokenizer: reading the SentencePiece model {source} needs the optional `sentencepiece` "
                "package (pip install 'lmx[sentencepiece]'); it is not installed"
            ) from None
        self._model = model
        self._sp = sentencepiece.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(model)
        except Exception as exc:
            raise DataError(f"data.tokenizer: {source} is not a SentencePiece model ({exc})") from None
        self._n = self._sp.get_piece_size()
        own = {EOS: self._sp.eos_id(), PAD: self._sp.pad_id(), BOS: self._sp.bos_id()}
        self._specials, extra = {}, 0
        for name, token_id in own.items():
            if token_id >= 0:
                self._specials[name] = token_id
            else:  # appended after the model's pieces
                self._specials[name] = self._n + extra
                extra += 1
        self._extra = extra

    @classmethod
    def from_model_bytes(cls, model: bytes, source: str) -> SentencePieceTokenizer:
        return cls(model, source)

    @property
    def vocab_size(self) -> int:
        return self._n + self._extra

    @property
    def special_ids(self) -> dict[str, int]:
        out = dict(self._specials)
        for i in range(self._n):
            if self._sp.is_control(i) and i not in out.values():
                out[self._sp.id_to_piece(i)] = i
        return out

    def encode(self, text: str) -> list[int]:
        return list(self._sp.encode(text))

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(ids) for ids in self._sp.encode(list(texts))]

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode([int(i) for i in ids if 0 <= int(i) < self._n])

    def definition(self) -> str:
        return json.dumps({"kind": "sentencepiece", "model": base64.b64encode(self._model).decode("ascii")})

    @classmethod
    def from_definition(cls, text: str, source: str) -> SentencePieceTokenizer:
        try:
            data = json.loads(text)
            model = base64.b64decode(data["model"], validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise DataError(f"data.tokenizer: {source} is not an lmx SentencePiece definition") from None
        return cls(model, source)

    def piece(self, token_id: int) -> str:
        return self._sp.id_to_piece(token_id) if token_id < self._n else ""

    def piece_bytes(self) -> list[bytes]:
        out = []
        for i in range(self._n):
            piece = self._sp.id_to_piece(i)
            if self._sp.is_control(i) or self._sp.is_unknown(i):
                out.append(b"")
            elif self._sp.is_byte(i):
                out.append(bytes([int(piece[3:5], 16)]))
            else:
                out.append(piece.replace("\u2581", " ").encode("utf-8"))
        return out + [b""] * self._extra
