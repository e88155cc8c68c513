import pytest


@pytest.fixture(scope="session")
def trained_run(tiny, tmp_path_factory):
    """A finished tiny run (checkpoints at steps 4 and 8, synchronous saves), trained once per test process.
    Tests copy it before damaging or continuing it."""
    from lmx.train.loop import train

    path = tmp_path_factory.mktemp("trained") / "run"
    train(tiny, run_dir=path, show_progress=False)
    return path
