"""Load a text corpus named by `data.corpus` as an ordered, fingerprinted tuple of documents.

Specs: `stdlib` (the running interpreter's standard-library `*.py` sources, without site-packages or
dist-packages), a file, a directory (every non-hidden text file below it, recursively), a glob pattern
(`**` allowed), or `hf:<dataset>[:<split>]` (needs the optional `datasets` package). Documents come in
sorted relative-path order, decoded as UTF-8 with invalid bytes replaced by U+FFFD; empty ones are
skipped. With `max_bytes > 0` reading stops once that many UTF-8 bytes were collected (the document
that crosses the limit is cut at a character boundary), so the result is a deterministic prefix.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import platform
import sysconfig
from collections.abc import Iterable, Iterator
from pathlib import Path

from lmx.data.hf import read_hf
from lmx.errors import DataError

EXCLUDED_STDLIB_DIRS = ("site-packages", "dist-packages")
_SKIPPED_DIRS = ("__pycache__",)
FINGERPRINT_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class Document:
    """One text document: its relative path inside the corpus ("/"-separated) and its text."""

    path: str
    text: str

    @property
    def nbytes(self) -> int:
        return len(self.text.encode("utf-8"))


@dataclasses.dataclass(frozen=True)
class Corpus:
    """The documents of a spec in corpus order, with a fingerprint of the spec and their contents."""

    spec: str
    documents: tuple[Document, ...]
    fingerprint: str  # sha256 hex over (format, python version for stdlib, spec, paths, content hashes)
    python_version: str  # platform.python_version() for the stdlib corpus, "" otherwise
    num_bytes: int

    @property
    def short_fingerprint(self) -> str:
        return self.fingerprint[:16]

    @property
    def num_docs(self) -> int:
        return len(self.documents)


def load_corpus(spec: str, max_bytes: int = 0) -> Corpus:
    """Read the corpus named by `spec`; raise DataError naming data.corpus if it is missing or empty."""
    if max_bytes < 0:
        raise DataError(f"data.max_corpus_bytes: must be >= 0, got {max_bytes}")
    spec = spec.strip()
    python_version = platform.python_version() if spec == "stdlib" else ""
    documents = tuple(_take_prefix(_read_spec(spec), max_bytes))
    if not documents:
        raise DataError(f"data.corpus: {spec!r} contains no non-empty text documents")
    return Corpus(
        spec=spec,
        documents=documents,
        fingerprint=corpus_fingerprint(spec, python_version, documents),
        python_version=python_version,
        num_bytes=sum(doc.nbytes for doc in documents),
    )


def corpus_fingerprint(spec: str, python_version: str, documents: Iterable[Document]) -> str:
    """sha256 hex over the format version, the Python version, the spec and each (path, sha256(text))."""
    digest = hashlib.sha256()
    header = {"format": FINGERPRINT_FORMAT, "python": python_version, "spec": spec}
    digest.update(json.dumps(header, sort_keys=True).encode("utf-8") + b"\n")
    for doc in documents:
        content = hashlib.sha256(doc.text.encode("utf-8")).hexdigest()
        digest.update(f"{doc.path}\0{content}\n".encode("utf-8", errors="surrogatepass"))
    return digest.hexdigest()


# --- readers -------------------------------------------------------------------------------


def _read_spec(spec: str) -> Iterator[Document]:
    if spec == "stdlib":
        return _read_stdlib()
    if spec.startswith("hf:"):
        return (Document(path, text) for path, text in read_hf(spec))
    if glob.has_magic(spec):
        return _read_glob(spec)
    path = Path(spec).expanduser()
    if path.is_file():
        return _read_files([(path.name, path)], skip_binary=False)
    if path.is_dir():
        return _read_files(_walk(path, lambda name: True), skip_binary=True)
    raise DataError(
        f"data.corpus: no such file or directory {spec!r} (expected stdlib, a path, a glob or hf:<name>)"
    )


def stdlib_root() -> Path:
    """The standard-library directory of the running interpreter."""
    return Path(sysconfig.get_paths()["stdlib"])


def _read_stdlib() -> Iterator[Document]:
    root = stdlib_root()
    if not root.is_dir():
        raise DataError(f"data.corpus: the standard library directory {str(root)!r} does not exist")
    return _read_files(
        _walk(root, lambda name: name.endswith(".py"), EXCLUDED_STDLIB_DIRS), skip_binary=False
    )


def _read_glob(pattern: str) -> Iterator[Document]:
    expanded = os.path.expanduser(pattern)
    matches = [Path(m) for m in glob.glob(expanded, recursive=True)]
    files = [m for m in matches if m.is_file()]
    if not files:
        raise DataError(f"data.corpus: no files match {pattern!r}")
    base = _glob_base(expanded)
    named = sorted((_relative(f, base), f) for f in files)
    return _read_files(named, skip_binary=True)


def _glob_base(pattern: str) -> Path:
    """The leading directories of a glob pattern that hold no wildcard; paths are named relative to it."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _relative(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


def _walk(root: Path, keep, excluded_dirs: tuple[str, ...] = ()) -> list[tuple[str, Path]]:
    """(relative posix path, path) of kept regular files below `root`, sorted by relative path."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [
            d for d in dirnames if not d.startswith(".") and d not in _SKIPPED_DIRS and d not in excluded_dirs
        ]
        for name in filenames:
            path = Path(dirpath) / name
            if not name.startswith(".") and keep(name) and path.is_file():
                found.append((path.relative_to(root).as_posix(), path))
    if not found:
        raise DataError(f"data.corpus: no files found under {str(root)!r}")
    return sorted(found)


def _read_files(named: list[tuple[str, Path]], skip_binary: bool) -> Iterator[Document]:
    """Decode each file as UTF-8 (errors replaced); with `skip_binary`, files holding a NUL byte are skipped."""
    for relpath, path in named:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise DataError(f"data.corpus: cannot read {str(path)!r}: {exc.strerror or exc}") from None
        if skip_binary and b"\0" in raw:
            continue
        yield Document(relpath, raw.decode("utf-8", errors="replace"))


def _take_prefix(documents: Iterable[Document], max_bytes: int) -> Iterator[Document]:
    """Non-empty documents in order; with max_bytes > 0, stop at that many bytes, cutting the last one."""
    total = 0
    for doc in documents:
        if not doc.text:
            continue
        if max_bytes:
            size = doc.nbytes
            if total + size >= max_bytes:
                head = doc.text.encode("utf-8")[: max_bytes - total].decode("utf-8", errors="ignore")
                if head:
                    yield Document(doc.path, head)
                return
            total += size
        yield doc
