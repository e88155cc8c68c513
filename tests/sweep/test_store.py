"""The results store (results.parquet), `lmx sweep table` and `lmx sweep plot`, on hand-made sweep
directories (tests/sweep/fake_runs.py: the files lmx train and the launcher write; nothing trains)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from lmx.cli import main
from lmx.errors import ConfigError
from lmx.sweep import plot, store, table
from tests.sweep.fake_runs import make_trial, write_sweep_json

# (n_layers, d_model) -> (final valid loss, params); 10 layers so that `n_layers>2` is not a string compare
GRID = {(2, 32): (4.90, 6400), (2, 64): (4.85, 12800), (10, 32): (4.70, 32000), (10, 64): (4.65, 64000)}


@pytest.fixture
def sweep(tmp_path) -> Path:
    """A 2x2 grid of finished trials, a failed trial without run files and a running one without a summary."""
    out = tmp_path / "sweep"
    dirs = []
    for (layers, width), (val, params) in GRID.items():
        dirs.append(make_trial(out, f"n_layers-{layers}_d_model-{width}", {"model.n_layers": layers, "model.d_model": width},
                               losses=[5.7, 5.5, 5.3, val + 0.05], val_losses={8: val}, params=params,
                               wall_s=30.0 + layers))
    dirs.append(make_trial(out, "n_layers-16_d_model-32", {"model.n_layers": 16, "model.d_model": 32}, status="failed",
                           attempts=2, wall_s=1.5, run=False, error="Traceback (most recent call last):\nValueError: boom"))
    dirs.append(make_trial(out, "n_layers-16_d_model-64", {"model.n_layers": 16, "model.d_model": 64}, status="running",
                           wall_s=None, losses=[5.8, 5.6]))
    write_sweep_json(out, "grid", dirs)
    return out


def _table_json(out, **kwargs) -> list[dict]:
    return json.loads(table.sweep_table(out, fmt="json", **kwargs))


# --- the store ---------------------------------------------------------------------------------


def test_store_has_one_typed_row_per_trial_readable_by_pandas(sweep):
    path = store.write_store(sweep)
    assert path == sweep / "results.parquet"
    df = pd.read_parquet(path)
    names = [f"n_layers-{n}_d_model-{d}" for n, d in GRID] + ["n_layers-16_d_model-32", "n_layers-16_d_model-64"]
    assert list(df["name"]) == names  # sweep.json's order
    assert list(df["status"]) == ["done"] * 4 + ["failed", "running"]
    assert list(df["attempts"]) == [1, 1, 1, 1, 2, 1]
    assert df["wall_s"].tolist()[:5] == [32.0, 32.0, 40.0, 40.0, 1.5] and math.isnan(df["wall_s"].iloc[5])
    assert df["error"].iloc[4].endswith("ValueError: boom") and pd.isna(df["error"].iloc[0])
    assert all(Path(p).parent == sweep / "trials" for p in df["run_dir"])
    for i, ((layers, width), (val, params)) in enumerate(GRID.items()):
        row = df.iloc[i]
        assert (row["config.model.n_layers"], row["config.model.d_model"]) == (layers, width)
        assert row["metrics.val_loss"] == val and row["metrics.params"] == params
        assert row["metrics.val_perplexity"] == pytest.approx(math.exp(val))
        assert row["metrics.final_train_loss"] == val + 0.05
        assert row["metrics.tokens_seen"] == 8 * 4 * 32  # steps x batch x seq_len of configs/tiny.py
    # the failed trial has no config.json: its overrides fill its config columns, the rest is null
    assert df["config.model.n_layers"].iloc[4] == 16 and pd.isna(df["config.optim.lr"].iloc[4])
    assert df["metrics.val_loss"].iloc[4:].isna().all()  # failed and running: no summary yet
    schema = pa.parquet.read_schema(path)
    assert schema.field("config.model.n_layers").type == pa.int64()
    assert schema.field("config.optim.lr").type == pa.float64()
    assert schema.field("config.model.tie_embeddings").type == pa.bool_()
    assert schema.field("metrics.params").type == pa.int64()
    assert schema.field("metrics.resumed_from").type == pa.float64()  # null in every row: still a metric column
    assert json.loads(df["config.mesh.shape"].iloc[0]) == {"data": -1}  # a mapping leaf: JSON text
    assert json.loads(df["overrides"].iloc[0]) == {"model.n_layers": 2, "model.d_model": 32}
    assert not list(sweep.glob(".results.parquet*"))  # no temporary file left


def test_columns_a_trial_lacks_are_null_and_types_stay_consistent(sweep):
    odd = next((sweep / "trials").glob("n_layers-2_d_model-32--*"))
    summary = json.loads((odd / "summary.json").read_text())
    del summary["val_perplexity"]
    summary["params"] = 6400.5  # a float among ints: the column becomes float64
    summary["extra_metric"] = 7
    (odd / "summary.json").write_text(json.dumps(summary))
    t = store.rebuild_store(sweep)
    assert t.schema.field("metrics.params").type == pa.float64()
    assert t.column("metrics.params").to_pylist()[:2] == [6400.5, 12800.0]
    assert t.column("metrics.val_perplexity").to_pylist()[0] is None
    assert t.column("metrics.extra_metric").to_pylist() == [7, None, None, None, None, None]


def test_write_store_is_atomic(sweep, monkeypatch):
    store.write_store(sweep)
    before = (sweep / "results.parquet").read_bytes()
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (replaced.append((Path(src), Path(dst))), real_replace(src, dst)))
    store.write_store(sweep)
    [(src, dst)] = replaced
    assert dst == sweep / "results.parquet" and src.parent == sweep and src.name.startswith(".results.parquet.tmp")

    def broken(table, where):
        Path(where).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(store.pq, "write_table", broken)
    with pytest.raises(OSError):
        store.write_store(sweep)
    assert (sweep / "results.parquet").read_bytes() == before  # the old store stays whole
    assert not list(sweep.glob(".results.parquet*"))


def test_concurrent_writers_leave_a_whole_store(sweep):
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: store.write_store(sweep), range(8)))
    assert set(paths) == {sweep / "results.parquet"}
    assert pd.read_parquet(paths[0]).shape[0] == 6 and not list(sweep.glob(".results.parquet*"))


def test_non_finite_metrics_sort_last_and_fail_comparisons(sweep):
    diverged = next((sweep / "trials").glob("n_layers-10_d_model-64--*"))
    summary = json.loads((diverged / "summary.json").read_text())
    (diverged / "summary.json").write_text(json.dumps({**summary, "val_loss": float("nan"), "final_train_loss": "nan"}))
    rows = _table_json(sweep, sort="val_loss", cols=["name", "val_loss", "final_train_loss"], where=["status=done"])
    assert [r["name"] for r in rows][-1] == "n_layers-10_d_model-64"
    assert rows[-1]["metrics.val_loss"] == "nan" and rows[-1]["metrics.final_train_loss"] == "nan"
    assert "n_layers-10_d_model-64" not in [r["name"] for r in _table_json(sweep, where=["val_loss<100"])]


def test_read_store_rebuilds_when_missing_or_older_than_a_trial(sweep):
    assert not (sweep / "results.parquet").exists()
    assert store.read_store(sweep).num_rows == 6
    assert (sweep / "results.parquet").exists()
    written = (sweep / "results.parquet").stat().st_mtime
    assert not store.is_stale(sweep)

    running = next((sweep / "trials").glob("n_layers-16_d_model-64--*"))
    trial = json.loads((running / "trial.json").read_text())
    (running / "trial.json").write_text(json.dumps({**trial, "status": "failed", "error": "killed"}))
    os.utime(running / "trial.json", (written + 5, written + 5))
    assert store.is_stale(sweep)
    assert store.read_store(sweep).column("status").to_pylist()[5] == "failed"

    # a trial directory removed by hand: the store follows the directories
    failed = next((sweep / "trials").glob("n_layers-16_d_model-32--*"))
    for f in failed.iterdir():
        f.unlink()
    failed.rmdir()
    assert store.read_store(sweep).num_rows == 5


def test_not_a_sweep_directory_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"not a sweep directory \(does not exist\)") as err:
        store.read_store(tmp_path / "nowhere")
    assert "\n" not in str(err.value)


# --- lmx sweep table ------------------------------------------------------------------------------


def test_default_columns_are_the_swept_keys_and_main_metrics(sweep):
    text = table.sweep_table(sweep)
    lines = text.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["name", "status", "model.d_model", "model.n_layers", "wall_s", "val_loss", "val_perplexity",
                      "val_bits_per_byte", "params", "tokens_seen"]
    assert len({len(line) for line in lines}) == 1  # aligned
    assert lines[1].count("-:") == 8  # number columns right-aligned
    assert len(lines) == 2 + 6
    row = [c.strip() for c in lines[2].strip("|").split("|")]
    assert row == ["n_layers-2_d_model-32", "done", "32", "2", "32", "4.9", f"{math.exp(4.9):.5g}",
                   f"{4.9 / math.log(2):.5g}", "6400", "1024"]
    failed = [c.strip() for c in lines[6].strip("|").split("|")]
    assert failed[:4] == ["n_layers-16_d_model-32", "failed", "32", "16"] and failed[5:] == [""] * 5


def test_where_compares_numbers_as_numbers_and_combines(sweep):
    names = lambda rows: [r["name"] for r in rows]  # noqa: E731
    assert names(_table_json(sweep, where=["n_layers>2"])) == [
        "n_layers-10_d_model-32", "n_layers-10_d_model-64", "n_layers-16_d_model-32", "n_layers-16_d_model-64"]
    assert names(_table_json(sweep, where=["model.n_layers>=10", "status=done"])) == [
        "n_layers-10_d_model-32", "n_layers-10_d_model-64"]
    assert names(_table_json(sweep, where=["config.model.n_layers<=2", "d_model!=32"])) == ["n_layers-2_d_model-64"]
    assert names(_table_json(sweep, where=["val_loss<4.8"])) == ["n_layers-10_d_model-32", "n_layers-10_d_model-64"]
    assert names(_table_json(sweep, where=["status!=done"])) == ["n_layers-16_d_model-32", "n_layers-16_d_model-64"]
    assert names(_table_json(sweep, where=["metrics.val_loss=null"])) == ["n_layers-16_d_model-32", "n_layers-16_d_model-64"]
    assert names(_table_json(sweep, where=["optim.lr=0.003", "n_layers<3"])) == ["n_layers-2_d_model-32", "n_layers-2_d_model-64"]
    assert names(_table_json(sweep, where=["model.tie_embeddings=true", "n_layers=10"])) == [
        "n_layers-10_d_model-32", "n_layers-10_d_model-64"]
    assert _table_json(sweep, where=["n_layers>100"]) == []
    assert "(no trials match in" in table.sweep_table(sweep, where=["n_layers>100"])
    with pytest.raises(ConfigError, match="numeric; 'deep' is not a number"):
        table.sweep_table(sweep, where=["n_layers>deep"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        table.sweep_table(sweep, where=["n_layers"])


def test_sort_ascending_descending_missing_last(sweep):
    rows = _table_json(sweep, sort="val_loss", cols=["name", "val_loss"])
    assert [r["metrics.val_loss"] for r in rows] == [4.65, 4.70, 4.85, 4.90, None, None]
    rows = _table_json(sweep, sort="-val_loss", cols=["name", "val_loss"])
    assert [r["metrics.val_loss"] for r in rows] == [4.90, 4.85, 4.70, 4.65, None, None]
    rows = _table_json(sweep, sort="-params", where=["d_model=64"], cols=["name"])
    assert [r["name"] for r in rows] == ["n_layers-10_d_model-64", "n_layers-2_d_model-64", "n_layers-16_d_model-64"]


def test_csv_and_json_keep_full_names_and_values(sweep):
    text = table.sweep_table(sweep, cols=["name", "n_layers", "val_loss", "error"], fmt="csv", where=["n_layers>=16"])
    rows = list(csv.reader(io.StringIO(text)))  # the error keeps its newline, inside quotes
    assert rows[0] == ["name", "config.model.n_layers", "metrics.val_loss", "error"]
    assert rows[1] == ["n_layers-16_d_model-32", "16", "", "Traceback (most recent call last):\nValueError: boom"]
    [row] = _table_json(sweep, cols=["name", "val_perplexity"], where=["name=n_layers-2_d_model-64"])
    assert row == {"name": "n_layers-2_d_model-64", "metrics.val_perplexity": math.exp(4.85)}


@pytest.mark.parametrize("kwargs, flag, suggestion", [
    ({"cols": ["name", "val_los"]}, "--cols", "metrics.val_loss"),
    ({"sort": "-n_layer"}, "--sort", "config.model.n_layers"),
    ({"where": ["d_modl>3"]}, "--where", "config.model.d_model"),
])
def test_unknown_column_is_one_line_with_close_matches(sweep, kwargs, flag, suggestion):
    with pytest.raises(ConfigError) as err:
        table.sweep_table(sweep, **kwargs)
    message = str(err.value)
    assert message.startswith(flag) and "unknown column" in message and suggestion in message and "\n" not in message


def test_unknown_column_without_close_matches_lists_the_kinds_of_columns(sweep):
    with pytest.raises(ConfigError) as err:
        table.sweep_table(sweep, cols=["zzzz"])
    message = str(err.value)
    assert "columns: name, id, status" in message and "config.<dotted key>" in message and "val_loss" in message


def test_ambiguous_short_name_is_refused(sweep):
    with pytest.raises(ConfigError, match="ambiguous: .*max_distance"):
        table.sweep_table(sweep, cols=["max_distance"])


# --- lmx sweep plot -------------------------------------------------------------------------------


@pytest.fixture
def seeded(tmp_path) -> tuple[Path, dict]:
    """2 depths x 2 widths x 3 seeds (random final valid losses); returns (out, {(layers, width): losses})."""
    out, rng, dirs, values = tmp_path / "seeded", np.random.default_rng(0), [], {}
    for layers in (2, 4):
        for width in (32, 64):
            values[layers, width] = [float(v) for v in 5.0 - 0.1 * layers - width / 640 + rng.normal(0, 0.03, 3)]
            for seed, val in enumerate(values[layers, width]):
                dirs.append(make_trial(out, f"n_layers-{layers}_d_model-{width}_seed-{seed}",
                                       {"model.n_layers": layers, "model.d_model": width, "train.seed": seed},
                                       val_losses={8: val}, params=100 * layers * width))
    dirs.append(make_trial(out, "n_layers-8_d_model-32_seed-0", {"model.n_layers": 8, "model.d_model": 32, "train.seed": 0},
                           status="failed", run=False))
    write_sweep_json(out, "seeded", dirs)
    return out, values


def test_plot_aggregates_seeds_and_its_csv_is_the_plotted_data(seeded):
    out, values = seeded
    png, csv_path = plot.plot_sweep(out, x="params", y="val_loss", hue="n_layers", logx=True)
    assert png == out / "plot_val_loss_vs_params.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(csv_path.open()))
    expected = []
    for layers in (2, 4):
        for width in (32, 64):  # params grow with width: the order of the points along x
            v = np.array(values[layers, width])
            expected.append({"config.model.n_layers": str(layers), "metrics.params": str(100 * layers * width),
                             "mean": v.mean(), "min": v.min(), "max": v.max(), "std": v.std(ddof=1), "n": "3",
                             "trials": ";".join(f"n_layers-{layers}_d_model-{width}_seed-{s}" for s in range(3))})
    assert len(rows) == len(expected)
    for row, exp in zip(rows, expected, strict=True):
        assert row["config.model.n_layers"] == exp["config.model.n_layers"]
        assert row["metrics.params"] == exp["metrics.params"]
        assert float(row["metrics.val_loss"]) == pytest.approx(exp["mean"], abs=1e-12)
        assert float(row["metrics.val_loss_min"]) == exp["min"] and float(row["metrics.val_loss_max"]) == exp["max"]
        assert float(row["metrics.val_loss_std"]) == pytest.approx(exp["std"], abs=1e-12)
        assert row["n"] == exp["n"] and row["trials"] == exp["trials"]

    # the figure draws exactly those numbers: one line per hue value through the means, a band min..max
    x_col, y_col, hue_col, series = plot.plot_data(out, "params", "val_loss", "n_layers")
    fig = plot.figure(x_col, y_col, hue_col, series, logx=True)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == ["model.n_layers=2", "model.n_layers=4"]
    for line, layers in zip(ax.lines, (2, 4), strict=True):
        drawn = line.get_xydata()
        mine = [r for r in rows if r["config.model.n_layers"] == str(layers)]
        np.testing.assert_array_equal(drawn[:, 0], [float(r["metrics.params"]) for r in mine])
        np.testing.assert_allclose(drawn[:, 1], [float(r["metrics.val_loss"]) for r in mine], rtol=0, atol=1e-15)
    bands = ax.collections
    assert len(bands) == 2
    lows = bands[0].get_paths()[0].vertices[:, 1]
    assert lows.min() == pytest.approx(min(float(r["metrics.val_loss_min"]) for r in rows[:2]))
    assert ax.get_xscale() == "log"


def test_plot_without_hue_where_and_output(seeded, tmp_path):
    out, values = seeded
    png, csv_path = plot.plot_sweep(out, x="d_model", y="val_loss", where=["n_layers=4"], output=tmp_path / "p" / "w")
    assert png == tmp_path / "p" / "w.png" and csv_path == tmp_path / "p" / "w.csv" and png.exists()
    rows = list(csv.reader(csv_path.open()))
    assert rows[0][:2] == ["config.model.d_model", "metrics.val_loss"]
    assert [(r[0], float(r[1])) for r in rows[1:]] == [("32", pytest.approx(np.mean(values[4, 32]))),
                                                        ("64", pytest.approx(np.mean(values[4, 64])))]
    png, _ = plot.plot_sweep(out, x="model.d_model", y="metrics.val_loss")
    assert png.name == "plot_metrics-val_loss_vs_model-d_model.png"  # the names as given
    with pytest.raises(ConfigError, match="--y: unknown column 'val_los'"):
        plot.plot_sweep(out, x="d_model", y="val_los")
    with pytest.raises(ConfigError, match="no finished trial has both"):
        plot.plot_sweep(out, x="d_model", y="val_loss", where=["n_layers=8"])


# --- the CLI -----------------------------------------------------------------------------------


def test_cli_sweep_table_and_plot(sweep, capsys):
    assert main(["sweep", "table", str(sweep), "--sort=-val_loss", "--where", "status=done"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| name") and lines[2].startswith("| n_layers-2_d_model-32 ") and len(lines) == 6
    assert main(["sweep", "table", str(sweep), "--cols", "name", "n_layers", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == ["name,config.model.n_layers", "n_layers-2_d_model-32,2"]
    assert main(["sweep", "plot", str(sweep), "--x", "params", "--y", "val_loss", "--hue", "n_layers", "--logx"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {sweep}/plot_val_loss_vs_params.png and {sweep}/plot_val_loss_vs_params.csv"


def test_cli_bad_column_exits_2_with_one_line(sweep, capsys):
    assert main(["sweep", "table", str(sweep), "--cols", "name", "nope_column"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith("lmx sweep: error: --cols: unknown column 'nope_column'")
