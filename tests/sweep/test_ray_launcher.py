"""The Ray launcher end to end: a local Ray cluster that the test starts (`ray start --head`) and stops
runs a 2-trial sweep of tiny configs; both trials finish, are recorded by the driver and reach the store."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import lmx
from lmx.cli import main
from lmx.sweep import status as trial_status

pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[2]
RAY = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A one-node cluster with 2 CPUs, started for this module and stopped after it."""
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([RAY, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                    f"--temp-dir={temp}", "--disable-usage-stats"], check=True, capture_output=True, env=env)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, env=env)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_sweep_runs_its_trials_as_ray_tasks(ray_cluster, tmp_path, cache_dir, capsys):
    file = tmp_path / "on_ray.py"
    file.write_text(textwrap.dedent(f"""
        from lmx.sweep import Sweep, grid
        sweep = Sweep(name="on_ray", base="tiny", trials=grid("model.d_model", [32, 48]),
                      fixed={{"data.cache_dir": {str(cache_dir)!r}, "train.steps": 6, "eval.sample_tokens": 0}})
    """))
    out = tmp_path / "out"
    code = main(["sweep", "run", str(file), "--out", str(out), "--launcher", "ray", "--ray-address", ray_cluster,
                 "--ray-cpus", "1"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    runs = sorted((out / "trials").iterdir())
    assert [p.name.rpartition("--")[0] for p in runs] == ["d_model-32", "d_model-48"]
    for run in runs:
        status = trial_status.read_trial_status(run)
        assert status["status"] == "done" and status["launcher"] == "ray" and status["attempts"] == 1
        assert "ray, node" in (run / "trial.log").read_text()  # the task wrote the log on a Ray worker
        loaded = lmx.load(run)
        assert loaded.step == 6 and loaded.config.model.d_model == int(run.name.split("-")[1].split("--")[0])
    table = pd.read_parquet(out / "results.parquet")
    assert sorted(table["name"]) == ["d_model-32", "d_model-48"] and set(table["status"]) == {"done"}
    # a rerun finds both done and starts nothing
    assert main(["sweep", "run", str(file), "--out", str(out), "--launcher", "ray", "--ray-address", ray_cluster]) == 0
    assert "0 to run, 0 to resume, 0 to rerun, 2 done" in capsys.readouterr().out


def test_no_cluster_at_the_address_is_one_line_naming_the_flag(tmp_path, capsys):
    file = tmp_path / "nowhere.py"
    file.write_text('from lmx.sweep import Sweep, grid\n'
                    'sweep = Sweep(name="nowhere", base="tiny", trials=grid("model.d_model", [32]))\n')
    code = main(["sweep", "run", str(file), "--out", str(tmp_path / "out"), "--launcher", "ray",
                 "--ray-address", f"127.0.0.1:{_free_port()}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--ray-address" in err
    assert not (tmp_path / "out").exists()  # refused before anything was written
