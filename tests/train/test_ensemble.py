"""Ensembles (lmx.train.ensemble) on configs/tiny.py: an ensemble of three members that differ in
train.seed, optim.lr and model.init_std trains as the three separate runs do, into normal run
directories; resume; refusals; the `python -m lmx.train.ensemble SPEC.json` entry point.

Tolerance of the comparison with separate runs: the ensemble runs the same train step under
jax.vmap, so XLA batches the member matmuls and may sum in another order than the unbatched
program; float32 rounding then differs by a few ulps per step (observed: relative differences of
about 1e-7 on the losses after 8 steps, member 0 bit-identical on CPU). rtol 1e-4 on the losses
and rtol 1e-4 / atol 1e-6 on the final parameters leave room for other backends while catching
any real difference (another learning rate, seed or batch changes the losses at the 1e-2 level).
"""

import json
import shutil

import jax
import numpy as np
import pytest

import lmx
from lmx.errors import ConfigError
from lmx.train.checkpoint import CheckpointNotice
from lmx.train.ensemble import check_ensemble, ensemble_groups, main, train_ensemble
from lmx.train.loop import train
from lmx.train.metrics import read_metrics

LOSS_RTOL = 1e-4
PARAM_RTOL, PARAM_ATOL = 1e-4, 1e-6
MEMBERS = [  # (train.seed, optim.lr, model.init_std)
    (0, 3e-3, 0.02),
    (1, 1e-3, 0.02),
    (2, 5e-3, 0.03),
]


@pytest.fixture(scope="module")
def configs(tiny):
    base = tiny.replace(**{"train.log_every": 1})
    return [base.replace(**{"train.seed": s, "optim.lr": lr, "model.init_std": std}) for s, lr, std in MEMBERS]


@pytest.fixture(scope="module")
def ensemble(configs, tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    run_dirs = [root / f"member{i}" for i in range(len(configs))]
    summaries = train_ensemble(configs, run_dirs)
    return run_dirs, summaries


@pytest.fixture(scope="module")
def alone(configs, tmp_path_factory):
    """Each member trained by itself with lmx.train.loop.train: (run_dir, summary) per member."""
    root = tmp_path_factory.mktemp("alone")
    runs = []
    for i, config in enumerate(configs):
        # samples do not change training; skipping them keeps the three reference runs short
        summary = train(config.replace(**{"eval.sample_tokens": 0}), run_dir=root / f"alone{i}", show_progress=False)
        runs.append((root / f"alone{i}", summary))
    return runs


def _losses(run_dir):
    return [(m["step"], m["loss"]) for m in read_metrics(run_dir) if "loss" in m]


def _params(run_dir):
    return jax.device_get(jax.tree.leaves(lmx.load(run_dir).model))


def test_members_train_as_separate_runs(configs, ensemble, alone):
    run_dirs, summaries = ensemble
    for i, (config, run_dir, summary, (alone_dir, alone_summary)) in enumerate(zip(configs, run_dirs, summaries,
                                                                                      alone)):
        ours, theirs = _losses(run_dir), _losses(alone_dir)
        assert [s for s, _ in ours] == [s for s, _ in theirs] == list(range(1, config.train.steps + 1))
        np.testing.assert_allclose([v for _, v in ours], [v for _, v in theirs], rtol=LOSS_RTOL, err_msg=f"member {i}")
        np.testing.assert_allclose(summary["val_loss"], alone_summary["val_loss"], rtol=LOSS_RTOL)
        lrs = [m["lr"] for m in read_metrics(run_dir) if "lr" in m]
        np.testing.assert_allclose(lrs, [m["lr"] for m in read_metrics(alone_dir) if "lr" in m],
                                   rtol=1e-6)
        for a, b in zip(_params(run_dir), _params(alone_dir)):
            np.testing.assert_allclose(a, b, rtol=PARAM_RTOL, atol=PARAM_ATOL)
    # the members really differ (another seed / lr): the comparison above is not vacuous
    assert len({s["final_train_loss"] for s in summaries}) == len(summaries)


def test_member_run_directory_is_a_normal_run(configs, ensemble, alone):
    run_dirs, summaries = ensemble
    for i, (config, run_dir) in enumerate(zip(configs, run_dirs)):
        for name in ("config.json", "tokenizer", "checkpoints", "metrics.jsonl", "events", "summary.json"):
            assert (run_dir / name).exists(), name
        assert json.loads((run_dir / "config.json").read_text()) == config.to_dict()
        saved = json.loads((run_dir / "summary.json").read_text())
        assert saved["status"] == "completed" and saved["steps"] == config.train.steps
        assert saved["ensemble"] == {"size": len(configs), "index": i}
        assert saved["samples"] and saved["samples"][0]["prompt"] == config.eval.sample_prompts[0]
        assert sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()) == [4, 8]
        assert any("val_loss" in m for m in read_metrics(run_dir))
    run = lmx.load(run_dirs[1])
    assert run.step == configs[1].train.steps and run.config == configs[1]
    # a normal run's summary has no key the ensemble's lacks
    assert set(alone[0][1]) <= set(summaries[0])


def _truncate_arrays(step_dir):
    """Damage a checkpoint step: cut its array files short (its restore then fails)."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file() and p.stat().st_size > 16]
    assert files
    for path in files:
        path.write_bytes(path.read_bytes()[:8])


def test_resume_restores_every_member(configs, ensemble, tmp_path):
    run_dirs, _ = ensemble
    copies = [tmp_path / run_dir.name for run_dir in run_dirs]
    for run_dir, copy in zip(run_dirs, copies):
        shutil.copytree(run_dir, copy)
        (copy / "summary.json").unlink()
    # a kill during the last save: member 2's step 8 is damaged; members 0 and 1 had saved theirs
    _truncate_arrays(copies[2] / "checkpoints" / "8")
    with pytest.warns(CheckpointNotice, match=r"resume from step 4: member 2 step 8 failed verification"):
        summaries = train_ensemble(configs, copies, resume=True)
    for run_dir, copy, summary in zip(run_dirs, copies, summaries):
        assert summary["resumed_from"] == 4
        assert _losses(copy) == _losses(run_dir)
        for a, b in zip(_params(run_dir), _params(copy)):
            np.testing.assert_array_equal(a, b)
    # the members' healthy step 8 was written again; the damaged one is kept aside for a look
    assert sorted(p.name for p in (copies[0] / "checkpoints").iterdir()) == ["4", "8"]
    assert sorted(p.name for p in (copies[2] / "checkpoints").iterdir()) == ["4", "8", "8.damaged"]


def test_groups_and_refusals(configs, tmp_path, capsys):
    wider = configs[0].replace(**{"model.d_model": 64})
    elsewhere = configs[1].replace(**{"train.run_dir": "runs/x", "name": "other"})
    assert ensemble_groups([configs[0], wider, elsewhere, configs[2]]) == [[0, 2, 3], [1]]
    with pytest.raises(ConfigError, match=r"^model\.d_model: ") as info:
        check_ensemble([configs[0], configs[1], wider])
    assert "\n" not in str(info.value) and "member 2: 64" in str(info.value)
    # refused before anything is written
    run_dirs = [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(ConfigError, match="model.d_model"):
        train_ensemble([configs[0], wider], run_dirs)
    assert not any(d.exists() for d in run_dirs)
    # the entry point: one line on stderr, exit 2
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"members": [{"config": c.to_dict(), "run_dir": str(d)}
                                            for c, d in zip([configs[0], wider], run_dirs)], "resume": False}))
    assert main([str(spec)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lmx ensemble: error: model.d_model:")
    spec.write_text(json.dumps({"members": []}))
    assert main([str(spec)]) == 2
    assert "non-empty list `members`" in capsys.readouterr().err
    assert not any(d.exists() for d in run_dirs)


def test_a_member_that_halts_stops_alone(configs, tmp_path, capsys):
    """Through the entry point: member 1's learning rate blows it up (train.nonfinite=halt): it stops with
    the error a normal run raises, member 0 completes, and the exit status is 2 with one line for member 1."""
    members = [configs[0], configs[0].replace(**{"optim.lr": 1e4, "train.seed": 1})]
    run_dirs = [tmp_path / "calm", tmp_path / "wild"]
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"members": [{"config": c.to_dict(), "run_dir": str(d)}
                                            for c, d in zip(members, run_dirs)], "resume": False}))
    assert main([str(spec)]) == 2
    calm, wild = (json.loads((d / "summary.json").read_text()) for d in run_dirs)
    assert calm["status"] == "completed" and calm["steps"] == members[0].train.steps
    assert wild["status"] == "failed" and wild["error"].startswith("train.nonfinite=halt: non-finite loss")
    assert wild["steps"] < members[1].train.steps and wild["ensemble"] == {"size": 2, "index": 1}
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith(f"lmx ensemble: error: member 1 ({run_dirs[1]}): train.nonfinite=halt")
    assert lmx.load(run_dirs[0]).step == members[0].train.steps
