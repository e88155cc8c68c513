"""A sweep with ensemble=True: trials that differ only in train.seed and optim.lr train as one
`python -m lmx.train.ensemble` job, and each member ends as an ordinary done trial with its own run."""

import textwrap

import numpy as np
import pandas as pd

import lmx
from lmx.cli import main
from lmx.sweep import status as trial_status


def test_seed_and_lr_trials_train_as_one_ensemble_job(tmp_path, cache_dir, capsys):
    file = tmp_path / "ens.py"
    file.write_text(textwrap.dedent(f"""
        from lmx.sweep import Sweep, grid, product
        sweep = Sweep(name="ens", base="tiny", ensemble=True,
                      trials=product(grid("train.seed", [0, 1]), grid("optim.lr", [0.003, 0.001])),
                      fixed={{"data.cache_dir": {str(cache_dir)!r}, "train.steps": 6, "eval.sample_tokens": 0}})
    """))
    out = tmp_path / "out"
    assert main(["sweep", "run", str(file), "--out", str(out)]) == 0, capsys.readouterr()
    printed = capsys.readouterr().out
    assert printed.count("start ensemble ens-") == 1  # one job for the four trials
    runs = sorted((out / "trials").iterdir())
    assert len(runs) == 4
    groups = {trial_status.read_trial_status(run)["ensemble"] for run in runs}
    assert len(groups) == 1 and groups.pop().startswith("ens-")
    finals = []
    for run in runs:
        assert trial_status.read_trial_status(run)["status"] == "done"
        loaded = lmx.load(run)
        assert loaded.step == 6
        finals.append(np.asarray(loaded.model.embed.value))
    # four members, four different models (seed and lr both reach each member)
    assert all(not np.array_equal(a, b) for i, a in enumerate(finals) for b in finals[i + 1:])
    table = pd.read_parquet(out / "results.parquet")
    assert set(table["status"]) == {"done"} and len(table) == 4
