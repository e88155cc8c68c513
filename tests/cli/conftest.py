import pytest

from lmx.cli import main


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, cache_dir):
    """A finished tiny training run made through the CLI, one per test module."""
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    code = main(["train", "--config", "tiny", "--quiet", "--run-dir", str(run_dir),
                 "--set", f"data.cache_dir={cache_dir}"])
    assert code == 0
    return run_dir
