"""Train/validation split of a corpus by a hash of each document's relative path.

A document goes to validation iff `int(sha256(path).hexdigest()[:8], 16) / 2**32 < valid_fraction`.
With >= 2 documents each split gets at least one: if validation is empty the document with the smallest
score moves there; if training is empty the one with the largest score moves there. A one-document
corpus is cut by characters instead: the first `int(len(text) * (1 - valid_fraction))` characters
(clamped to [1, len - 1]) train, the rest validate.
"""

from __future__ import annotations

import dataclasses
import hashlib

from lmx.data.corpus import Corpus, Document
from lmx.errors import DataError


def valid_score(path: str) -> float:
    """The document's position in [0, 1): the first 32 bits of sha256(path) divided by 2**32."""
    digest = hashlib.sha256(path.encode("utf-8", errors="surrogatepass")).hexdigest()
    return int(digest[:8], 16) / 2**32


@dataclasses.dataclass(frozen=True)
class CorpusSplit:
    """The training and validation documents of a corpus under one valid_fraction."""

    corpus: Corpus
    valid_fraction: float
    train: tuple[Document, ...]
    valid: tuple[Document, ...]

    @property
    def key(self) -> list:
        """What identifies this split in cache keys: the corpus fingerprint and the fraction."""
        return [self.corpus.fingerprint, repr(float(self.valid_fraction))]

    def stats(self) -> dict:
        return {
            "train_docs": len(self.train),
            "valid_docs": len(self.valid),
            "train_bytes": sum(d.nbytes for d in self.train),
            "valid_bytes": sum(d.nbytes for d in self.valid),
        }


def split_corpus(corpus: Corpus, valid_fraction: float) -> CorpusSplit:
    """Split by the path-hash rule above; both sides are non-empty."""
    if not 0 < valid_fraction < 1:
        raise DataError(f"data.valid_fraction: must be in (0, 1), got {valid_fraction}")
    docs = corpus.documents
    if len(docs) == 1:
        train, valid = _cut_single(docs[0], valid_fraction)
    else:
        train, valid = _split_many(docs, valid_fraction)
    return CorpusSplit(corpus, valid_fraction, train, valid)


def _split_many(docs, valid_fraction):
    scores = [valid_score(d.path) for d in docs]
    in_valid = [s < valid_fraction for s in scores]
    order = sorted(range(len(docs)), key=lambda i: (scores[i], docs[i].path))
    if not any(in_valid):
        in_valid[order[0]] = True
    if all(in_valid):
        in_valid[order[-1]] = False
    train = tuple(d for d, v in zip(docs, in_valid, strict=True) if not v)
    valid = tuple(d for d, v in zip(docs, in_valid, strict=True) if v)
    return train, valid


def _cut_single(doc: Document, valid_fraction: float):
    n = len(doc.text)
    if n < 2:
        raise DataError(
            f"data.corpus: the only document {doc.path!r} is too short to split into train and valid"
        )
    cut = min(max(int(n * (1 - valid_fraction)), 1), n - 1)
    return (Document(doc.path, doc.text[:cut]),), (Document(doc.path, doc.text[cut:]),)
