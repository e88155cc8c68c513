"""`lmx compare`: runs and sweeps side by side, runs that differ only in seed grouped (mean ± std, n,
a band on the figure), on hand-made run directories (tests/sweep/fake_runs.py; nothing trains)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from lmx.cli import main
from lmx.errors import ConfigError
from lmx.sweep import compare
from tests.sweep.fake_runs import make_run, make_trial, write_sweep_json

# train-loss curves (steps 2, 4, 6, 8) and final valid losses of three seeds of a baseline and of a variant
BASE = {0: [5.70, 5.52, 5.31, 5.10], 1: [5.68, 5.50, 5.35, 5.16], 2: [5.72, 5.47, 5.28, 5.07]}
BASE_VAL = {0: 5.01, 1: 5.09, 2: 4.98}
WIDE = {0: [5.60, 5.30, 5.00, 4.80], 1: [5.62, 5.33, 5.04, 4.86]}
WIDE_VAL = {0: 4.72, 1: 4.79}


@pytest.fixture
def runs(tmp_path) -> dict[str, Path]:
    """Plain run directories: base seeds 0-2 (each with its own cache_dir: a run-location key), wide seeds 0-1,
    and a half-finished run (metrics but no summary)."""
    made = {}
    for seed, losses in BASE.items():
        made[f"base{seed}"] = make_run(tmp_path / f"base-s{seed}", {"train.seed": seed, "data.cache_dir": f"/c{seed}"},
                                       losses=losses, val_losses={4: losses[1] - 0.02, 8: BASE_VAL[seed]},
                                       wall=20.0 + seed)
    for seed, losses in WIDE.items():
        made[f"wide{seed}"] = make_run(tmp_path / f"wide-s{seed}", {"train.seed": seed, "model.d_model": 64},
                                       losses=losses, val_losses={4: losses[1] - 0.02, 8: WIDE_VAL[seed]},
                                       params=90000, wall=40.0)
    made["partial"] = make_run(tmp_path / "partial", {"model.n_layers": 4}, losses=[5.9, 5.7], val_losses={4: 5.6},
                               summary=False)
    return made


def _groups(text: str) -> dict[str, dict]:
    return {row["name"]: row for row in json.loads(text)}


def test_seed_groups_show_mean_std_and_n(runs, tmp_path):
    paths = [runs[k] for k in ("base0", "base1", "base2", "wide0", "wide1")]
    text, png = compare.compare(paths, output=tmp_path / "cmp.png", fmt="json")
    groups = _groups(text)
    assert list(groups) == ["base-s*", "wide-s*"]  # the common prefix of the group's run names
    base, wide = groups.values()
    assert (base["n"], wide["n"]) == (3, 2) and (base["seeds"], wide["seeds"]) == ("0,1,2", "0,1")
    assert base["config.model.d_model"] == 32 and wide["config.model.d_model"] == 64
    assert "config.train.seed" not in base and "config.data.cache_dir" not in base  # not "differing keys"
    val = np.array(list(BASE_VAL.values()))
    assert base["val_loss"] == pytest.approx(val.mean(), abs=1e-12)
    assert base["val_loss_std"] == pytest.approx(val.std(ddof=1), abs=1e-12)
    train = np.array([c[-1] for c in BASE.values()])
    assert base["final_train_loss"] == pytest.approx(train.mean(), abs=1e-12)
    assert base["final_train_loss_std"] == pytest.approx(train.std(ddof=1), abs=1e-12)
    assert base["wall_s"] == pytest.approx(21.0) and base["wall_s_std"] == pytest.approx(1.0)
    assert (base["params"], base["params_std"]) == (34976, 0.0)  # equal across seeds: the value itself
    assert wide["val_loss"] == pytest.approx(np.mean(list(WIDE_VAL.values())))
    assert wide["tokens_seen"] == 8 * 4 * 32

    md, _ = compare.compare(paths, output=tmp_path / "cmp.png")
    lines = md.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["name", "model.d_model", "n", "seeds", "train loss", "valid loss", "params", "tokens", "wall s"]
    row = [c.strip() for c in lines[2].strip("|").split("|")]
    assert row[2:4] == ["3", "0,1,2"]
    assert 0.01 <= val.std(ddof=1) < 0.1  # so both are written with 3 decimals
    assert row[5] == f"{val.mean():.3f} ± {val.std(ddof=1):.3f}"
    assert row[6] == "34976"
    assert "mean ± sample std (ddof=1)" in lines[-1]


@pytest.mark.parametrize("mean, std, text", [(5.45333, 0.00396, "5.4533 ± 0.0040"), (70.625, 13.86, "71 ± 14"),
                                               (5.155, 0.053, "5.155 ± 0.053"), (1234.5, 0.25, "1234.50 ± 0.25")])
def test_plus_minus_rounds_the_mean_to_the_std(mean, std, text):
    assert compare.plus_minus(mean, std) == text


def test_the_figure_csv_is_mean_and_min_max_over_seeds(runs, tmp_path):
    paths = [runs[k] for k in ("base0", "base1", "base2", "wide0", "wide1")]
    _, png = compare.compare(paths, output=tmp_path / "figs" / "cmp.png")
    assert png == tmp_path / "figs" / "cmp.png" and png.read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader((tmp_path / "figs" / "cmp.csv").open()))
    base_train = [r for r in rows if r["curve"] == "train_loss" and r["run"] == rows[0]["run"]]
    curves = np.array(list(BASE.values()))
    assert [int(r["step"]) for r in base_train] == [2, 4, 6, 8]
    np.testing.assert_allclose([float(r["mean"]) for r in base_train], curves.mean(axis=0), rtol=0, atol=1e-12)
    np.testing.assert_array_equal([float(r["min"]) for r in base_train], curves.min(axis=0))
    np.testing.assert_array_equal([float(r["max"]) for r in base_train], curves.max(axis=0))
    assert {r["n"] for r in base_train} == {"3"}
    base_val = [r for r in rows if r["curve"] == "val_loss" and r["run"] == rows[0]["run"]]
    assert [int(r["step"]) for r in base_val] == [4, 8]
    assert float(base_val[1]["mean"]) == pytest.approx(np.mean(list(BASE_VAL.values())), abs=1e-12)

    fig, data = compare.loss_figure(compare.group_runs(compare.collect_runs(paths)))
    ax = fig.axes[0]
    train_lines = [line for line in ax.lines if line.get_linestyle() == "-"]
    assert len(train_lines) == 2 and train_lines[0].get_label().endswith("(n=3)")
    np.testing.assert_allclose(train_lines[0].get_ydata(), curves.mean(axis=0), rtol=0, atol=1e-12)
    assert len([c for c in ax.collections if type(c).__name__ in ("PolyCollection", "FillBetweenPolyCollection")]) == 2


def test_single_runs_and_a_half_finished_run(runs, tmp_path):
    with open(runs["partial"] / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "loss": 5.')  # a row cut short by a kill: skipped
    text, _ = compare.compare([runs["base0"], runs["wide1"], runs["partial"]], output=tmp_path / "c.png", fmt="json")
    groups = _groups(text)
    assert list(groups) == ["base-s0", "wide-s1", "partial"]
    assert all(g["n"] == 1 and g["val_loss_std"] is None for g in groups.values())
    assert groups["base-s0"]["val_loss"] == BASE_VAL[0]
    partial = groups["partial"]
    assert partial["status"] == "unknown" and partial["params"] is None
    assert (partial["final_train_loss"], partial["val_loss"]) == (5.7, 5.6)  # its last logged values
    assert (partial["config.model.n_layers"], groups["wide-s1"]["config.model.d_model"]) == (4, 64)
    md, _ = compare.compare([runs["base0"], runs["partial"]], output=tmp_path / "c.png")
    assert "status" in md.splitlines()[0] and "±" not in md


def test_sweep_directories_expand_to_their_trials_and_group_by_seed(tmp_path):
    out, dirs, vals = tmp_path / "sw", [], {}
    rng = np.random.default_rng(1)
    for lr in (0.001, 0.003):
        for seed in range(3):
            val = float(5.0 - 100 * lr + rng.normal(0, 0.02))
            vals.setdefault(lr, []).append(val)
            dirs.append(make_trial(out, f"lr-{lr:g}_seed-{seed}", {"optim.lr": lr, "train.seed": seed},
                                   val_losses={8: val}, wall_s=10.0 + seed))
    dirs.append(make_trial(out, "lr-0.01_seed-0", {"optim.lr": 0.01, "train.seed": 0}, status="failed", run=False))
    write_sweep_json(out, "lr", dirs)
    text, png = compare.compare([out], output=tmp_path / "c.png", fmt="json")
    groups = _groups(text)
    assert list(groups) == ["lr-0.001", "lr-0.003"]  # the seed part dropped; the failed trial has no run files
    for name, lr in (("lr-0.001", 0.001), ("lr-0.003", 0.003)):
        assert groups[name]["config.optim.lr"] == lr and groups[name]["n"] == 3
        assert groups[name]["val_loss"] == pytest.approx(np.mean(vals[lr]), abs=1e-12)
        assert groups[name]["val_loss_std"] == pytest.approx(np.std(vals[lr], ddof=1), abs=1e-12)
        assert groups[name]["wall_s"] == pytest.approx(11.0)  # trial.json's wall_s, as the store
    assert png.exists()


def test_unknown_path_is_one_line(runs, tmp_path):
    with pytest.raises(ConfigError, match="no such run or sweep directory") as err:
        compare.compare([runs["base0"], tmp_path / "missing"])
    assert str(tmp_path / "missing") in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="neither a run directory"):
        compare.compare([tmp_path / "empty"])


def test_cli_compare(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["compare", str(runs["base0"]), str(runs["base1"]), str(runs["wide0"])]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("| name") and out.strip().endswith("loss curves: compare.png")
    assert (tmp_path / "compare.png").exists() and (tmp_path / "compare.csv").exists()
    assert main(["compare", str(runs["base0"]), "--format", "csv", "--output", "x.png"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("name,status,n,seeds,final_train_loss")
    assert main(["compare", str(runs["base0"]), str(tmp_path / "nope")]) == 2
    captured = capsys.readouterr()
    [line] = captured.err.splitlines()
    assert line == f"lmx compare: error: {tmp_path / 'nope'}: no such run or sweep directory"
