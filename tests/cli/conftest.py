import contextlib
import io

import pytest

from lmx.cli import main


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, cache_dir):
    """A finished tiny training run made through the CLI, one per test module. What the command printed
    (a console 1000 columns wide, so no line is wrapped) is kept next to the run, in train_stdout.txt."""
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setenv("COLUMNS", "1000")
        code = main(["train", "--config", "tiny", "--quiet", "--run-dir", str(run_dir),
                     "--set", f"data.cache_dir={cache_dir}"])
    assert code == 0
    (run_dir.parent / "train_stdout.txt").write_text(printed.getvalue())
    return run_dir
