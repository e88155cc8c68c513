"""The interface every tokenizer kind implements, and `load_tokenizer` (reads a saved directory back by its
kind.txt; the kinds registry, lmx.tokenizers.registry, fills `SAVED_KINDS`)."""

from __future__ import annotations

import abc
import hashlib
import json
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from lmx import registry
from lmx.errors import ConfigError, DataError

EOS, PAD, BOS = "<|eos|>", "<|pad|>", "<|bos|>"
SPECIAL_TOKENS = (EOS, PAD, BOS)
MASK, UNK = "<|mask|>", "<|unk|>"
FINGERPRINT_FILE = "fingerprint.txt"
KIND_FILE = "kind.txt"
# kind.txt value -> the class that reads such a directory back. The interface cannot import its
# implementations (they import it); lmx.tokenizers.registry fills the table with every kind.
SAVED_KINDS: dict[str, type[Tokenizer]] = {}


def sentinel(i: int) -> str:
    """The i-th span-corruption sentinel token, `<|sentinel_i|>`."""
    return f"<|sentinel_{i}|>"


def special_token_list(extra: Sequence[str] = (), num_sentinels: int = 0) -> list[str]:
    """<|eos|> <|pad|> <|bos|>, then `extra` (e.g. <|mask|>), then the sentinels, in id order."""
    tokens = [*SPECIAL_TOKENS, *extra, *(sentinel(i) for i in range(num_sentinels))]
    if len(set(tokens)) != len(tokens):
        raise ConfigError(f"data.special_tokens: {list(extra)} repeats a built-in or sentinel token")
    return tokens


# data.normalization -> the Unicode normal form applied before tokenizing (None: text as it is)
NORMALIZATIONS = registry.NORMALIZATIONS.register_all({"none": None, "nfc": "NFC", "nfkc": "NFKC"})


def normalize_text(text: str, normalization: str) -> str:
    """Apply `data.normalization` (none, nfc, nfkc) in Python, as the tokenizers' normalizers do."""
    form = NORMALIZATIONS[normalization]
    return text if form is None else unicodedata.normalize(form, text)


class Tokenizer(abc.ABC):
    """Text <-> token ids. `encode` adds no special tokens; `decode` drops special and unknown ids.

    `token_bytes[i]` is how many UTF-8 bytes of text id i stands for (EOS counts 1, as the document
    separator; every other special token 0), so `token_bytes[encode(t)].sum() == len(t.encode())`;
    `token_chars[i]` counts the characters that *start* in id i's bytes (EOS 1), so
    `token_chars[encode(t)].sum() == len(t)`. Both hold for the normalised text when
    `data.normalization` is not none, and exactly only for kinds that round-trip (docs/tokenizers.md).
    """

    kind: ClassVar[str]
    definition_file: ClassVar[str]

    # --- per-kind ------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def vocab_size(self) -> int: ...

    @property
    @abc.abstractmethod
    def special_ids(self) -> dict[str, int]:
        """{"<|eos|>": id, "<|pad|>": id, "<|bos|>": id, ...every other special token: id}."""

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]: ...

    @abc.abstractmethod
    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str: ...

    @abc.abstractmethod
    def definition(self) -> str:
        """The full definition as a JSON string; `from_definition` rebuilds an identical tokenizer."""

    @classmethod
    @abc.abstractmethod
    def from_definition(cls, text: str, source: str) -> Tokenizer: ...

    @abc.abstractmethod
    def piece_bytes(self) -> list[bytes]:
        """The UTF-8 bytes each id stands for when decoded (b"" for special and unknown ids)."""

    def piece(self, token_id: int) -> str:
        """The vocabulary string of one id (for display)."""
        return self.piece_bytes()[token_id].decode("utf-8", errors="backslashreplace")

    # --- shared --------------------------------------------------------------------------
    def encode_arrays(self, texts: Sequence[str], dtype=np.int32) -> list[np.ndarray]:
        """`encode_batch` returning one numpy array per text."""
        return [np.asarray(ids, dtype=dtype) for ids in self.encode_batch(texts)]

    @property
    def eos_id(self) -> int:
        return self.special_ids[EOS]

    @property
    def pad_id(self) -> int:
        return self.special_ids[PAD]

    @property
    def bos_id(self) -> int:
        return self.special_ids[BOS]

    @property
    def mask_id(self) -> int | None:
        """The id of `<|mask|>` if it is one of the special tokens (data.special_tokens), else None."""
        return self.special_ids.get(MASK)

    @property
    def sentinel_ids(self) -> list[int]:
        """Ids of <|sentinel_0|>, <|sentinel_1|>, ... (data.num_sentinels of them)."""
        ids, specials = [], self.special_ids
        while sentinel(len(ids)) in specials:
            ids.append(specials[sentinel(len(ids))])
        return ids

    @property
    def fingerprint(self) -> str:
        """sha256 hex of the kind and the canonical (key-sorted) JSON definition."""
        cached = getattr(self, "_fingerprint", None)
        if cached is None:
            canonical = json.dumps(json.loads(self.definition()), sort_keys=True, separators=(",", ":"))
            cached = hashlib.sha256(f"{self.kind}\n{canonical}".encode()).hexdigest()
            self._fingerprint = cached
        return cached

    @property
    def token_bytes(self) -> np.ndarray:
        """int32 [vocab_size]: UTF-8 bytes each id stands for (EOS 1, other special tokens 0)."""
        cached = getattr(self, "_token_bytes", None)
        if cached is None:
            cached = self._accounting(lambda piece: len(piece))
            self._token_bytes = cached
        return cached

    @property
    def token_chars(self) -> np.ndarray:
        """int32 [vocab_size]: characters starting in each id's bytes (non-continuation bytes; EOS 1)."""
        cached = getattr(self, "_token_chars", None)
        if cached is None:
            cached = self._accounting(lambda piece: sum(1 for b in piece if b & 0xC0 != 0x80))
            self._token_chars = cached
        return cached

    def _accounting(self, count) -> np.ndarray:
        pieces = self.piece_bytes()
        out = np.array([count(p) for p in pieces], dtype=np.int32)
        for token_id in self.special_ids.values():
            out[token_id] = 0
        out[self.eos_id] = 1
        out.flags.writeable = False
        return out

    def save(self, directory: str | Path) -> Path:
        """Write the definition file, kind.txt and fingerprint.txt into `directory` (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / self.definition_file).write_text(self.definition(), encoding="utf-8")
        (directory / KIND_FILE).write_text(self.kind + "\n", encoding="utf-8")
        (directory / FINGERPRINT_FILE).write_text(self.fingerprint + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Tokenizer:
        """Read a tokenizer saved by `save` (JSON only); DataError if missing or not matching its fingerprint."""
        return load_tokenizer(directory)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} kind={self.kind} vocab_size={self.vocab_size} fp={self.fingerprint[:12]}>"


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Read a tokenizer saved by `Tokenizer.save` from `directory` and check it against fingerprint.txt.

    kind.txt names the kind; directories written before it existed hold tokenizer.json (byte_bpe)
    or bytes.json (bytes).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"data.tokenizer: tokenizer directory {str(directory)!r} does not exist")
    kind_file = directory / KIND_FILE
    if kind_file.is_file():
        kind = kind_file.read_text(encoding="utf-8").strip()
        if kind not in SAVED_KINDS:
            raise DataError(f"data.tokenizer: {str(kind_file)!r} names an unknown tokenizer kind {kind!r}")
        candidates = [SAVED_KINDS[kind]]
    else:
        candidates = [SAVED_KINDS["byte_bpe"], SAVED_KINDS["bytes"]]
    for cls in candidates:
        path = directory / cls.definition_file
        if path.is_file():
            tok = cls.from_definition(path.read_text(encoding="utf-8"), str(path))
            break
    else:
        names = " or ".join(cls.definition_file for cls in candidates)
        raise DataError(f"data.tokenizer: {str(directory)!r} holds no {names} (not a directory written by "
                        "`lmx tokenizer train`); name a tokenizer file instead: file:PATH.json, .model or .tiktoken")
    stamp = directory / FINGERPRINT_FILE
    if stamp.is_file() and stamp.read_text(encoding="utf-8").strip() != tok.fingerprint:
        raise DataError(
            f"data.tokenizer: {str(path)!r} does not match its {FINGERPRINT_FILE} (corrupt cache? delete it)"
        )
    return tok


def check_special_ids(tokenizer: Tokenizer, expected: dict[str, int], source: str) -> None:
    if tokenizer.special_ids != expected:
        raise DataError(
            f"data.tokenizer: {source} has special tokens {tokenizer.special_ids}, expected {expected}"
        )
