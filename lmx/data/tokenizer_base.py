"""The interface every tokenizer kind implements (see lmx.data.tokenizer for the registry)."""

from __future__ import annotations

import abc
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from lmx.errors import DataError

EOS, PAD, BOS = "<|eos|>", "<|pad|>", "<|bos|>"
SPECIAL_TOKENS = (EOS, PAD, BOS)
FINGERPRINT_FILE = "fingerprint.txt"


class Tokenizer(abc.ABC):
    """Text <-> token ids. `encode` adds no special tokens; `decode` drops special and unknown ids.

    `token_bytes[i]` is how many UTF-8 bytes of text id i stands for (EOS counts 1, as the document
    separator; PAD and BOS 0), so `token_bytes[encode(t)].sum() == len(t.encode())`.
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
        """{"<|eos|>": id, "<|pad|>": id, "<|bos|>": id}."""

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
    def _piece_bytes(self) -> np.ndarray:
        """Bytes per id ignoring the special-token convention."""

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
        """int32 [vocab_size]: UTF-8 bytes each id stands for (EOS 1, PAD 0, BOS 0)."""
        cached = getattr(self, "_token_bytes", None)
        if cached is None:
            cached = np.asarray(self._piece_bytes(), dtype=np.int32).copy()
            cached[self.eos_id] = 1
            cached[self.pad_id] = 0
            cached[self.bos_id] = 0
            cached.flags.writeable = False
            self._token_bytes = cached
        return cached

    def save(self, directory: str | Path) -> Path:
        """Write the JSON definition file and fingerprint.txt into `directory` (created if needed)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / self.definition_file).write_text(self.definition(), encoding="utf-8")
        (directory / FINGERPRINT_FILE).write_text(self.fingerprint + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Tokenizer:
        """Read a tokenizer saved by `save` (JSON only); DataError if missing or not matching its fingerprint."""
        from lmx.data.tokenizer import load_tokenizer

        return load_tokenizer(directory)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} kind={self.kind} vocab_size={self.vocab_size} fp={self.fingerprint[:12]}>"


def check_special_ids(tokenizer: Tokenizer, expected: dict[str, int], source: str) -> None:
    if tokenizer.special_ids != expected:
        raise DataError(
            f"data.tokenizer: {source} has special tokens {tokenizer.special_ids}, expected {expected}"
        )
