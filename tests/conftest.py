import os

import pytest

# Tests never touch the user's cache.
os.environ.setdefault("LMX_CACHE", os.path.join(os.path.dirname(__file__), "..", ".cache", "test-cache"))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("lmx-cache"))


@pytest.fixture(scope="session")
def tiny(cache_dir):
    """configs/tiny.py with a per-session cache directory."""
    from lmx.config import load_config

    return load_config("tiny", [f"data.cache_dir={cache_dir}"])


@pytest.fixture(scope="session", autouse=True)
def exact_float32_matmuls_on_accelerators():
    """On GPUs JAX's default float32 matmul precision is TF32 (about 1e-4 relative error), which the
    1e-5 reference comparisons would flag; the tests compare exact float32 arithmetic everywhere.
    (On an H200 the decoding and HF-parity tests fail at default precision and pass at 'highest':
    benchmarks/results/h200_decode_tests_*.txt.) On CPU float32 matmuls are exact already."""
    import jax

    if jax.default_backend() != "cpu":
        jax.config.update("jax_default_matmul_precision", "highest")
    yield


# Small corpora built inside each test's tmp_path (tests/data, tests/tokenizers, tests/cli).
SAMPLE_LINES = [
    "def add(a, b):\n    return a + b\n",
    "class Point:\n    x: int = 0\n    y: int = 0\n",
    "# naïve café résumé — ünïcödé ✓ 漢字 🎉\n",
    "for i in range(10):\n    print(i * i)\n",
    "import os\nprint(os.path.join('a', 'b'))\n",
]


def make_text_tree(root, n_files: int = 24) -> list[str]:
    """Write n_files small text files under root (some nested); return their relative paths, sorted."""
    paths = []
    for i in reversed(range(n_files)):  # created out of order on purpose
        rel = f"pkg{i % 3}/mod_{i:03d}.py" if i % 2 else f"file_{i:03d}.txt"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        body = "".join(SAMPLE_LINES[(i + k) % len(SAMPLE_LINES)] for k in range(3 + i % 4))
        path.write_text(f"# document {i}\n{body}", encoding="utf-8")
        paths.append(rel)
    return sorted(paths)


@pytest.fixture
def text_tree(tmp_path):
    """(root, sorted relative paths) of a 24-file corpus directory."""
    root = tmp_path / "corpus"
    root.mkdir()
    return root, make_text_tree(root)


@pytest.fixture
def text_dir(text_tree):
    return text_tree[0]
