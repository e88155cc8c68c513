"""Sweep files: axes, names, ids, derived settings, and every sweep-file problem reported before anything runs."""

import json
import textwrap
from pathlib import Path

import pytest

from lmx.cli import main
from lmx.config import load_config
from lmx.errors import ConfigError
from lmx.sweep import Sweep, derived, grid, loguniform, product, randint, random_search, uniform, zipped
from lmx.sweep import runner as sweep_runner
from lmx.sweep.loader import SweepFileError, load_sweep_file, resolve_trials
from lmx.sweep.spec import format_value, trial_id, trial_name


def write_sweep(tmp_path, body: str, name: str = "sweep_file.py"):
    path = tmp_path / name
    path.write_text("from lmx.sweep import Sweep, grid, product, zipped, random_search, derived\n"
                    + textwrap.dedent(body))
    return path


# --- axes --------------------------------------------------------------------------------------


def test_grid_product_and_zipped():
    assert grid("model.d_model", [32, 48]) == [{"model.d_model": 32}, {"model.d_model": 48}]
    assert product(grid("a.x", [1, 2]), grid("b.y", [3, 4])) == [
        {"a.x": 1, "b.y": 3}, {"a.x": 1, "b.y": 4}, {"a.x": 2, "b.y": 3}, {"a.x": 2, "b.y": 4}]
    assert zipped(grid("a.x", [1, 2]), grid("b.y", [3, 4])) == [{"a.x": 1, "b.y": 3}, {"a.x": 2, "b.y": 4}]
    with pytest.raises(ConfigError, match="lengths 2, 3"):
        zipped(grid("a.x", [1, 2]), grid("b.y", [3, 4, 5]))
    with pytest.raises(ConfigError, match="a.x"):
        product(grid("a.x", [1]), grid("a.x", [2]))
    with pytest.raises(ConfigError, match="must be a list"):
        grid("model.d_model", 32)


def test_random_search_is_seeded_in_range_and_independent_of_key_order():
    space = {"optim.lr": loguniform(1e-4, 1e-1), "optim.b1": uniform(0.8, 0.95),
             "model.n_layers": randint(1, 3), "model.d_model": [32, 64]}
    trials = random_search(space, n=40, seed=3)
    assert trials == random_search(space, n=40, seed=3)
    assert trials != random_search(space, n=40, seed=4)
    assert trials == random_search(dict(reversed(list(space.items()))), n=40, seed=3)
    assert all(1e-4 <= t["optim.lr"] <= 1e-1 and 0.8 <= t["optim.b1"] <= 0.95 for t in trials)
    assert {t["model.n_layers"] for t in trials} == {1, 2, 3}  # both ends included
    assert {t["model.d_model"] for t in trials} == {32, 64}
    assert all(type(t["model.n_layers"]) is int and type(t["optim.lr"]) is float for t in trials)
    # log-uniform: about as many draws below the geometric mean as above
    below = sum(t["optim.lr"] < 10 ** -2.5 for t in random_search(space, n=400, seed=0))
    assert 150 < below < 250
    with pytest.raises(ConfigError, match="positive"):
        loguniform(0, 1)


# --- names, ids, values ------------------------------------------------------------------------


def test_trial_names():
    assert trial_name({"model.n_layers": 2, "model.d_model": 64}) == "n_layers-2_d_model-64"
    assert trial_name({"optim.lr": 3e-4}) == "lr-0.0003"
    assert trial_name({"optim.lr": 1e9}) == "lr-1e09"  # not "1e-09"
    assert trial_name({"data.corpus": "/data/my corpus/*.txt"}) == "corpus--data-my-corpus--.txt"
    assert trial_name({"model.tie_embeddings": False}) == "tie_embeddings-false"
    assert trial_name({}) == "base"


@pytest.mark.parametrize("key,value", [
    ("optim.lr", 0.1 + 0.2), ("optim.lr", 3e-4), ("model.d_model", 48), ("model.tie_embeddings", False),
    ("data.corpus", "a=b"), ("mesh.shape", {"data": 1}), ("eval.sample_prompts", ["x", "y"]),
    ("train.steps", 1e4),
])
def test_values_reach_the_config_exactly_through_set(key, value):
    config = load_config("tiny").with_overrides([f"{key}={format_value(value)}"])
    section, _, field = key.partition(".")
    got = getattr(getattr(config, section), field)
    expected = tuple(value) if isinstance(value, list) else value
    assert got == expected and type(got) is type(expected) or key == "train.steps" and got == 10000


def _trials(tmp_path, body, out=None):
    path = write_sweep(tmp_path, body)
    return resolve_trials(load_sweep_file(path), out or tmp_path / "out", source=str(path))


def test_ids_depend_on_the_config_not_on_key_order_or_location(tmp_path):
    a = _trials(tmp_path, """
        sweep = Sweep(name="s", base="tiny", trials=[{"model.d_model": 48, "optim.lr": 0.01}],
                      fixed={"train.steps": 4, "data.cache_dir": "/a"})
    """)[0]
    b = _trials(tmp_path, """
        sweep = Sweep(name="s", base="tiny", trials=[{"optim.lr": 0.01, "model.d_model": 48}],
                      fixed={"data.cache_dir": "/b", "train.steps": 4})
    """, out=tmp_path / "elsewhere")[0]
    c = _trials(tmp_path, """
        sweep = Sweep(name="s", base="tiny", trials=[{"model.d_model": 48, "optim.lr": 0.01}],
                      fixed={"train.steps": 5})
    """)[0]
    assert a.id == b.id and len(a.id) == 10
    assert a.name == "d_model-48_lr-0.01" and b.name == "lr-0.01_d_model-48"
    assert c.id != a.id
    assert a.run_dir == tmp_path / "out" / "trials" / f"{a.name}--{a.id}"
    assert a.config.data.cache_dir == "/a" and a.config.model.d_model == 48 and a.config.train.steps == 4
    # the id is the hash of the resolved config: the same config by another route has the same id
    assert trial_id(load_config("tiny", ["optim.lr=0.01", "train.steps=4", "model.d_model=48"])) == a.id


def test_fixed_trial_and_derived_settings_in_order(tmp_path):
    trials = _trials(tmp_path, """
        sweep = Sweep(name="s", base="tiny",
                      trials=product(grid("data.batch_size", [4, 8]), grid("train.steps", [16])),
                      fixed={"train.steps": 8, "optim.warmup_steps": 1},
                      derive=derived(lambda t: {"optim.warmup_steps": t["train.steps"] // 4},
                                     lambda t: {"train.log_every": t["optim.warmup_steps"]}))
    """)
    assert [t.name for t in trials] == ["batch_size-4_steps-16", "batch_size-8_steps-16"]
    first = trials[0]
    assert first.overrides == {"data.batch_size": 4, "train.steps": 16}
    assert first.derived == {"optim.warmup_steps": 4, "train.log_every": 4}
    assert first.config.train.steps == 16 and first.config.optim.warmup_steps == 4
    assert first.config.train.log_every == 4
    assert first.assignments() == ["train.steps=16", "optim.warmup_steps=4", "data.batch_size=4",
                                   "train.log_every=4"]
    argv = sweep_runner.train_command("tiny", first)
    assert argv[argv.index("--config") + 1] == "tiny"
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    assert sets == first.assignments()
    assert argv[argv.index("--run-dir") + 1] == str(first.run_dir) and "--quiet" in argv
    assert "--resume" not in argv
    (first.run_dir).mkdir(parents=True)
    (first.run_dir / "config.json").write_text(first.config.to_json())
    assert "--resume" in sweep_runner.train_command("tiny", first)  # the directory holds the run


# --- ensembles ---------------------------------------------------------------------------------


def test_ensemble_groups_and_spec(tmp_path, monkeypatch):
    path = write_sweep(tmp_path, """
        sweep = Sweep(name="ens", base="tiny", ensemble=True,
                      trials=product(grid("model.d_model", [32, 48]), grid("train.seed", [0, 1]),
                                     grid("optim.lr", [0.001, 0.003])))
    """)
    sweep = load_sweep_file(path)
    trials = resolve_trials(sweep, tmp_path / "out")
    groups = sweep_runner.ensemble_groups(trials)
    assert [[t.name for t in g] for g in groups] == [[t.name for t in trials[:4]], [t.name for t in trials[4:]]]
    job = sweep_runner.ensemble_job(groups[0], tmp_path / "out", retries=0)
    spec = json.loads(job.argv[-1] and open(job.argv[-1]).read())
    assert job.argv[1:3] == ["-m", "lmx.train.ensemble"] and job.ensemble.startswith("ens-")
    assert [m["run_dir"] for m in spec["members"]] == [str(t.run_dir) for t in groups[0]]
    assert spec["members"][3]["config"] == groups[0][3].config.to_dict() and spec["resume"] is False
    # without lmx.train.ensemble the trials run one by one, with a notice
    monkeypatch.setattr(sweep_runner, "ENSEMBLE_MODULE", "lmx.train.no_such_ensemble_module")
    printed = []
    jobs = sweep_runner.build_jobs(sweep, trials, tmp_path / "out", 0, printed.append)
    assert [j.trials for j in jobs] == [[t] for t in trials] and all(j.ensemble is None for j in jobs)
    assert len(printed) == 1 and "one by one" in printed[0]


# --- problems: all reported, nothing written ---------------------------------------------------


def _problem(tmp_path, body, capsys):
    """run_sweep refuses the file; returns its message, after checking the CLI prints it as one line and
    exits 2 with nothing written."""
    path = write_sweep(tmp_path, body)
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as error:
        sweep_runner.run_sweep(path, out)
    assert main(["sweep", "run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lmx sweep: error: ")
    assert not out.exists()
    return str(error.value)


@pytest.mark.parametrize("body,words", [
    ("x = 1\n", ["defines no `sweep`"]),
    ("sweep = 3\n", ["must be a lmx.sweep.Sweep"]),
    ("raise RuntimeError('boom')\n", ["failed to load", "RuntimeError: boom"]),
    ("sweep = Sweep(name='s', base='tiny', trials=[])\n", ["sweep s has no trials"]),
    ("sweep = Sweep(name='s', base='no_such_config', trials=grid('model.d_model', [32]))\n",
     ["base:", "no_such_config"]),
    ("sweep = Sweep(name='s', base='tiny', trials=grid('model.d_modle', [32, 48]))\n",
     ["trial d_modle-32: model.d_modle: unknown config key (did you mean model.d_model?)",
      "trial d_modle-48: model.d_modle"]),
    ("sweep = Sweep(name='s', base='tiny', trials=grid('model.d_model', [32, 30]))\n",
     ["trial d_model-30: model.n_heads", "d_model=30"]),
    ("sweep = Sweep(name='s', base='tiny', trials=grid('optim.lr', [1e-3, 0.001]))\n",
     ["#1", "#2", "are both named lr-0.001"]),
    ("sweep = Sweep(name='s', base='tiny', trials=[{}, {'model.d_model': 32}])\n",
     ["#1", "#2", "resolve to the same config"]),
    ("sweep = Sweep(name='s', base='tiny', trials=grid('model.d_model', [32]), fixed={'model.position': 'alibi'})\n",
     ["fixed: model.position: renamed to model.position.kind"]),
    ("sweep = Sweep(name='s', base='tiny', trials=grid('train.run_dir', ['/x']))\n",
     ["trial run_dir--x: train.run_dir: set by the sweep"]),
    ("sweep = Sweep(name='s', base='tiny', trials=grid('model.d_model', [32]),\n"
     "              derive=derived(lambda t: {'model.n_heads': t['model.d_model'] // 10}))\n",
     ["trial d_model-32: model.n_heads", "(derived: model.n_heads=3)"]),
    ("sweep = Sweep(name='s', base='tiny', trials=grid('model.d_model', [32]), derive=lambda t: 1 / 0)\n",
     ["trial d_model-32: derive failed: ZeroDivisionError"]),
    ("sweep = Sweep(name='s', base='tiny', trials=grid('model.d_model', [object()]))\n",
     ["model.d_model: cannot pass a object"]),
])
def test_each_sweep_file_problem_names_the_trial_and_key(tmp_path, capsys, body, words):
    message = _problem(tmp_path, body, capsys)
    for word in words:
        assert word in message, message


def test_every_problem_is_reported_at_once(tmp_path, capsys):
    message = _problem(tmp_path, """
        sweep = Sweep(name="s", base="tiny",
                      trials=[{"model.d_model": 30}, {"optim.lr": -1.0}, {"model.nope": 1}, {"optim.lr": 0.01}])
    """, capsys)
    assert message.count("; ") == 2 and "3 problems" in message
    assert "trial d_model-30: model.n_heads" in message
    assert "trial lr--1: optim.lr: must be positive" in message
    assert "trial nope-1: model.nope: unknown config key" in message


def test_missing_sweep_file(tmp_path):
    with pytest.raises(ConfigError, match="no such sweep file"):
        load_sweep_file(tmp_path / "absent.py")


def test_sweep_file_error_keeps_the_problem_list(tmp_path):
    with pytest.raises(SweepFileError) as error:
        _trials(tmp_path, "sweep = Sweep(name='s', base='tiny', trials=[{'a.b': 1}, {'c.d': 2}])\n")
    assert len(error.value.problems) == 2


def test_sweep_dataclass_defaults():
    sweep = Sweep(name="s", base="tiny", trials=grid("model.d_model", [32]))
    assert sweep.fixed == {} and sweep.derive is None and sweep.ensemble is False


def test_derived_chains_functions_and_refuses_non_dicts():
    chain = derived(lambda t: {"b": t["a"] + 1}, lambda t: {"c": t["b"] * 2})
    assert chain({"a": 1}) == {"b": 2, "c": 4}
    with pytest.raises(TypeError, match="dict"):
        derived(lambda t: 1)({})


def test_the_depth_width_experiment_resolves(tmp_path):
    file = Path(__file__).resolve().parents[2] / "experiments" / "depth_width.py"
    trials = resolve_trials(load_sweep_file(file), tmp_path)
    assert [(t.config.model.n_layers, t.config.model.d_model) for t in trials] == [
        (4, 256), (4, 128), (4, 64), (2, 256), (2, 128), (2, 64)]
    assert all(t.config.model.resolved_head_dim == 32 and t.config.train.steps == 600 for t in trials)
    assert all(t.config.model.n_heads == 2 * t.config.model.n_kv_heads for t in trials)
