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
