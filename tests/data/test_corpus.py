import hashlib
import sys

import pytest

from lmx.data import corpus as corpus_mod
from lmx.data import load_corpus, split_corpus
from lmx.data.corpus import Corpus, Document
from lmx.errors import DataError


def independent_is_valid(path: str, fraction: float) -> bool:
    return int(hashlib.sha256(path.encode("utf-8")).hexdigest()[:8], 16) / 2**32 < fraction


def test_directory_spec_is_sorted_and_recursive(text_tree):
    text_dir, expected = text_tree
    corpus = load_corpus(str(text_dir))
    paths = [d.path for d in corpus.documents]
    assert paths == sorted(paths) == expected
    assert corpus.num_docs == 24
    assert corpus.num_bytes == sum(len(d.text.encode()) for d in corpus.documents)
    assert corpus.python_version == ""


def test_directory_skips_binary_hidden_and_empty_files(text_dir):
    (text_dir / "blob.bin").write_bytes(b"\x89PNG\x00\x01\x02")
    (text_dir / ".hidden.txt").write_text("secret")
    (text_dir / ".git").mkdir()
    (text_dir / ".git" / "HEAD").write_text("ref: main")
    (text_dir / "empty.txt").write_text("")
    paths = [d.path for d in load_corpus(str(text_dir)).documents]
    assert len(paths) == 24
    assert not any(p.startswith(".") or p in ("blob.bin", "empty.txt") for p in paths)


def test_invalid_utf8_is_replaced_deterministically(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    doc = load_corpus(str(tmp_path / "latin1.txt")).documents[0]
    assert doc == Document("latin1.txt", "caf\ufffd\n")


def test_glob_spec_names_paths_relative_to_the_fixed_prefix(text_dir):
    corpus = load_corpus(str(text_dir / "**" / "*.py"))
    paths = [d.path for d in corpus.documents]
    assert paths == sorted(paths)
    assert paths and all(p.startswith("pkg") and p.endswith(".py") for p in paths)
    assert len(load_corpus(str(text_dir / "*.txt")).documents) == 12


def test_file_spec(text_dir):
    corpus = load_corpus(str(text_dir / "file_000.txt"))
    assert [d.path for d in corpus.documents] == ["file_000.txt"]


def test_max_bytes_takes_a_deterministic_prefix(text_dir):
    full = load_corpus(str(text_dir))
    cut = load_corpus(str(text_dir), max_bytes=500)
    assert cut.num_bytes == 500
    assert [d.path for d in cut.documents] == [d.path for d in full.documents[: cut.num_docs]]
    assert full.documents[cut.num_docs - 1].text.startswith(cut.documents[-1].text)
    assert cut.fingerprint != full.fingerprint
    assert load_corpus(str(text_dir), max_bytes=500).fingerprint == cut.fingerprint


def test_fingerprint_tracks_content(text_dir):
    before = load_corpus(str(text_dir))
    assert load_corpus(str(text_dir)).fingerprint == before.fingerprint
    (text_dir / "file_000.txt").write_text("changed")
    after = load_corpus(str(text_dir))
    assert after.fingerprint != before.fingerprint
    assert len(after.short_fingerprint) == 16


@pytest.mark.parametrize("spec", ["does/not/exist", "nowhere/**/*.txt"])
def test_missing_corpus_names_the_setting(tmp_path, spec):
    with pytest.raises(DataError, match=r"^data\.corpus: .*" + spec.split("/")[0]):
        load_corpus(str(tmp_path / spec))


def test_empty_corpus_is_an_error(tmp_path):
    (tmp_path / "a.txt").write_text("")
    (tmp_path / "b.txt").write_text("")
    with pytest.raises(DataError, match=r"^data\.corpus: .*no non-empty text"):
        load_corpus(str(tmp_path))


def test_hf_without_datasets_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataError, match=r"^data\.corpus: hf: corpora need the optional `datasets` package"):
        load_corpus("hf:wikitext:train")


def test_stdlib_spec_reads_python_sources():
    corpus = load_corpus("stdlib", max_bytes=300_000)
    paths = [d.path for d in corpus.documents]
    assert paths == sorted(paths) and all(p.endswith(".py") for p in paths)
    assert corpus.num_bytes == 300_000
    assert (
        corpus.python_version and corpus.fingerprint != load_corpus("stdlib", max_bytes=200_000).fingerprint
    )


def test_stdlib_excludes_site_and_dist_packages(tmp_path, monkeypatch):
    for rel in ("abc.py", "json/decoder.py", "site-packages/numpy/x.py", "dist-packages/y.py", "notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"# {rel}\n")
    monkeypatch.setattr(corpus_mod, "stdlib_root", lambda: tmp_path)
    assert [d.path for d in load_corpus("stdlib").documents] == ["abc.py", "json/decoder.py"]


# --- split -----------------------------------------------------------------------------------


def _corpus(paths):
    docs = tuple(Document(p, f"text of {p}\n") for p in paths)
    return Corpus("test", docs, "0" * 64, "", sum(d.nbytes for d in docs))


def test_split_follows_the_path_hash_rule():
    paths = [f"dir/doc_{i}.txt" for i in range(300)]
    split = split_corpus(_corpus(paths), 0.2)
    assert [d.path for d in split.valid] == [p for p in paths if independent_is_valid(p, 0.2)]
    assert [d.path for d in split.train] == [p for p in paths if not independent_is_valid(p, 0.2)]
    assert 30 < len(split.valid) < 90
    assert split.stats()["valid_docs"] == len(split.valid)


def test_split_moves_extreme_documents_so_both_sides_are_non_empty():
    paths = [f"d{i}" for i in range(5)]
    scores = {p: int(hashlib.sha256(p.encode()).hexdigest()[:8], 16) for p in paths}
    tiny = split_corpus(_corpus(paths), 1e-9)
    assert [d.path for d in tiny.valid] == [min(paths, key=scores.get)]
    huge = split_corpus(_corpus(paths), 1 - 1e-9)
    assert [d.path for d in huge.train] == [max(paths, key=scores.get)]


def test_single_document_is_cut_by_characters():
    corpus = _corpus(["only.txt"])
    text = corpus.documents[0].text
    split = split_corpus(corpus, 0.25)
    cut = int(len(text) * 0.75)
    assert split.train[0].text == text[:cut] and split.valid[0].text == text[cut:]
