"""Tokenizer registry (`data.tokenizer`): the kinds lmx trains and the kinds read from files, training and loading.

Training takes any iterable of texts; the tokenizer of a corpus split, trained once and cached, is
lmx.data's (`lmx.data.get_tokenizer`), since lmx.data sits above lmx.tokenizers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from lmx import registry
from lmx.errors import ConfigError
from lmx.tokenizers.base import SAVED_KINDS, Tokenizer, load_tokenizer
from lmx.tokenizers.byte_bpe import ByteBPETokenizer
from lmx.tokenizers.bytes import BytesTokenizer
from lmx.tokenizers.external import (
    FILE_PREFIX,
    ExternalHFTokenizer,
    SentencePieceTokenizer,
    TiktokenTokenizer,
    external_kind,
    load_external,
)
from lmx.tokenizers.subword import BPETokenizer, UnigramTokenizer, WordPieceTokenizer

# Kinds lmx trains (data.tokenizer values).
TOKENIZER_KINDS = registry.TOKENIZERS.register_all({
    "byte_bpe": ByteBPETokenizer,
    "bytes": BytesTokenizer,
    "bpe": BPETokenizer,
    "wordpiece": WordPieceTokenizer,
    "unigram": UnigramTokenizer,
})
# Kinds read from existing files (data.tokenizer = "file:PATH").
EXTERNAL_TOKENIZERS: dict[str, type[Tokenizer]] = {
    "hf_json": ExternalHFTokenizer,
    "tiktoken": TiktokenTokenizer,
    "sentencepiece": SentencePieceTokenizer,
}
ALL_KINDS = {**TOKENIZER_KINDS, **EXTERNAL_TOKENIZERS}
SAVED_KINDS.update(ALL_KINDS)  # what `Tokenizer.load` / `load_tokenizer` read a saved kind.txt against


def train_tokenizer(
    kind: str,
    texts: Iterable[str],
    vocab_size: int,
    max_bytes: int = 0,
    special_tokens: Iterable[str] = (),
    num_sentinels: int = 0,
    normalization: str = "none",
) -> Tokenizer:
    """A new tokenizer of `kind` with at most `vocab_size` ids, trained on the first `max_bytes` of `texts`.

    `special_tokens` (e.g. ["<|mask|>"]) and `num_sentinels` sentinels follow <|eos|> <|pad|> <|bos|>;
    `normalization` is none, nfc or nfkc.
    """
    if kind not in TOKENIZER_KINDS:
        raise ConfigError(
            f"data.tokenizer: unknown value {kind!r}; choose one of {', '.join(TOKENIZER_KINDS)} or file:PATH"
        )
    registry.NORMALIZATIONS.check(normalization, "data.normalization")
    options = {"special_tokens": tuple(special_tokens), "num_sentinels": num_sentinels,
               "normalization": normalization}
    if kind == "bytes":
        tok = BytesTokenizer(**options)
        if vocab_size < tok.vocab_size:
            raise ConfigError(
                f"model.vocab_size: the bytes tokenizer needs vocab_size >= {tok.vocab_size}, got {vocab_size}"
            )
        return tok
    return TOKENIZER_KINDS[kind].train(take_bytes(texts, max_bytes), vocab_size, **options)


def take_bytes(texts: Iterable[str], max_bytes: int) -> Iterator[str]:
    """The texts in order until `max_bytes` UTF-8 bytes (0: all); the last one is cut at a character boundary."""
    remaining = max_bytes
    for text in texts:
        if not max_bytes:
            yield text
            continue
        data = text.encode("utf-8")
        if len(data) >= remaining:
            head = data[:remaining].decode("utf-8", errors="ignore")
            if head:
                yield head
            return
        remaining -= len(data)
        yield text


def load_any(spec: str) -> Tokenizer:
    """A tokenizer directory (lmx format) or an external tokenizer file (.json, .model, .tiktoken)."""
    return load_tokenizer(spec) if Path(spec).is_dir() else load_external(spec)


def tokenizer_directory(setting: str) -> Path | None:
    """DIR of `file:DIR` when DIR is a directory: one written by `lmx tokenizer train` or a run's tokenizer/."""
    if not setting.startswith(FILE_PREFIX):
        return None
    path = Path(setting[len(FILE_PREFIX):]).expanduser()
    return path if path.is_dir() else None


def tokenizer_kind(setting: str) -> str:
    """The kind a data.tokenizer value produces: the value itself, the kind saved in a `file:DIR`
    tokenizer directory, or hf_json/sentencepiece/tiktoken for a `file:` tokenizer file."""
    directory = tokenizer_directory(setting)
    if directory is not None:
        return load_tokenizer(directory).kind
    return external_kind(setting) if setting.startswith(FILE_PREFIX) else setting
