"""A disk that fills up during a run: the asynchronous save that hits ENOSPC stops the run with one line naming
its step, earlier checkpoints stay, nothing is left for --resume to trip over, and the resumed run ends
bit-identical to an undisturbed one.

The run directory lives on a 4 MiB tmpfs in a private mount namespace (`unshare -rm`, no root needed where
user namespaces are enabled); the test is skipped where that is not available.
"""

import os
import shlex
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

import lmx
from lmx.cli import main
from tests.reliability.helpers import ROOT


def _can_mount_tmpfs(tmp_path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    result = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=1m tmpfs {probe}"],
                            capture_output=True)
    return result.returncode == 0


def test_a_full_disk_during_an_asynchronous_save_stops_cleanly_and_resume_is_bit_identical(trained_run, tmp_path,
                                                                                           cache_dir):
    if not _can_mount_tmpfs(tmp_path):
        pytest.skip("needs `unshare -rm` and tmpfs mounts (user namespaces)")
    mount, saved = tmp_path / "small-disk", tmp_path / "saved"
    mount.mkdir()
    run = mount / "run"
    lmx_args = ["train", "--config", "tiny", "--quiet", "--run-dir", str(run), "--set", f"data.cache_dir={cache_dir}",
                "--set", "train.async_checkpointing=true", "--set", "train.checkpoint_every=2",
                "--set", "eval.sample_tokens=0"]
    driver = [sys.executable, str(ROOT / "tests" / "reliability" / "fill_disk.py"), "5", "--", *lmx_args]
    script = (f"mount -t tmpfs -o size=4m tmpfs {shlex.quote(str(mount))} && cd {shlex.quote(str(ROOT))} && "
              f"{shlex.join(driver)}; code=$?; cp -a {shlex.quote(str(run))} {shlex.quote(str(saved))}; exit $code")
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})

    assert result.returncode == 2, result.stderr[-3000:]
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1, err  # no tracebacks from Orbax, asyncio or the TensorBoard writer
    assert "saving the checkpoint of step 6" in err and "No space left on device" in err
    assert "earlier checkpoints are intact (newest: step 4)" in err and "lmx train --resume" in err
    assert sorted(p.name for p in (saved / "checkpoints").iterdir()) == ["2", "4"]  # no temporary directory
    assert lmx.load(saved).step == 4

    assert main(["train", "--resume", "--run-dir", str(saved), "--quiet"]) == 0  # disk space is back
    for a, b in zip(jax.tree.leaves(lmx.load(trained_run).model), jax.tree.leaves(lmx.load(saved).model),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
