"""`hf:<dataset>[:<split>]` corpora through the optional Hugging Face `datasets` package.

Documents are the rows' `text` column (else the first string column), named `<split>/<row index>`.
"""

from __future__ import annotations

from collections.abc import Iterator

from lmx.errors import DataError


def parse_hf_spec(spec: str) -> tuple[str, str]:
    """`hf:name[:split]` -> (name, split); the split defaults to `train`."""
    body = spec[len("hf:") :]
    name, _, split = body.partition(":")
    if not name:
        raise DataError(f"data.corpus: {spec!r} names no dataset; write hf:<dataset>[:<split>]")
    return name, split or "train"


def read_hf(spec: str) -> Iterator[tuple[str, str]]:
    """Yield (name, text) for the rows of a Hugging Face dataset split (lmx.data.corpus makes them
    Documents); DataError if `datasets` or the data is unavailable."""
    name, split = parse_hf_spec(spec)
    try:
        import datasets  # optional dependency (lmx[hf]), imported only for hf: corpora
    except ImportError:
        raise DataError(
            "data.corpus: hf: corpora need the optional `datasets` package (pip install lmx[hf]) "
            "and network access (or a filled datasets cache); it is not installed"
        ) from None
    try:
        dataset = datasets.load_dataset(name, split=split)
    except Exception as exc:  # network, missing dataset or split: all user-actionable
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"data.corpus: cannot load {spec!r} with `datasets` (offline?): {reason}") from None
    column = _text_column(dataset, spec)
    return ((f"{split}/{i:09d}", row[column] or "") for i, row in enumerate(dataset))


def _text_column(dataset, spec: str) -> str:
    features = getattr(dataset, "features", None) or {}
    names = list(features)
    if "text" in names:
        return "text"
    for column in names:
        if getattr(features[column], "dtype", None) in ("string", "large_string"):
            return column
    raise DataError(f"data.corpus: {spec!r} has no text column (columns: {', '.join(names) or 'none'})")
