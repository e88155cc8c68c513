"""The local launcher end to end: a 2-worker sweep of tiny trials, a failing trial, reruns, a sweep killed
mid-trial and resumed bit-exactly; and the launcher's pieces (CPU slots, thread limits, logs, signals,
outcomes, the status listing) on stand-in processes."""

import collections
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import lmx
from lmx.errors import ConfigError
from lmx.sweep import runner as sweep_runner
from lmx.sweep import status as trial_status
from lmx.sweep.launchers.base import Job
from lmx.sweep.launchers.local import LocalLauncher, cpu_slots, thread_env
from lmx.sweep.spec import Trial

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = [(0, 32), (0, 48), (1, 32), (1, 48)]  # (train.seed, model.d_model)
STEPS = 600  # long enough that a kill after the first checkpoint (step 100) lands mid-run
KILLED = "seed-0_d_model-32"


def sweep_file(path: Path, cache_dir: str, trials: str) -> Path:
    path.write_text(textwrap.dedent(f"""
        from lmx.sweep import Sweep, derived, grid, product
        sweep = Sweep(
            name="{path.stem}", base="tiny", trials={trials},
            fixed={{"data.cache_dir": {cache_dir!r}, "train.steps": {STEPS}, "train.checkpoint_every": 100,
                   "train.log_every": 50, "train.eval_every": {STEPS}, "eval.sample_tokens": 0}},
            derive=derived(lambda t: {{"optim.warmup_steps": t["train.steps"] // 100}}),
        )
    """))
    return path


def trial_dirs(out: Path) -> dict[str, Path]:
    return {p.name.rpartition("--")[0]: p for p in (out / "trials").iterdir()}


def checkpoint_steps(run_dir: Path) -> list[int]:
    path = run_dir / "checkpoints"
    return sorted(int(p.name) for p in path.iterdir() if p.name.isdigit()) if path.is_dir() else []


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache_dir):
    """Two `lmx sweep run` processes: `main` (the 4-trial product and a trial whose corpus does not exist,
    2 workers, --retries 1) and `killed` (one trial of the product, started once main has compiled it,
    and killed with SIGKILL once its first checkpoint is written). The trials share a JAX compilation
    cache (for speed: the seeds of one width share their compiled steps)."""
    root = tmp_path_factory.mktemp("sweeps")
    product = 'product(grid("train.seed", [0, 1]), grid("model.d_model", [32, 48]))'
    main_file = sweep_file(root / "main.py", cache_dir, product + f' + [{{"data.corpus": "{root}/gone/*.txt"}}]')
    kill_file = sweep_file(root / "killed.py", cache_dir, '[{"train.seed": 0, "model.d_model": 32}]')
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(root / "jax-cache"), "PYTHONPATH": str(ROOT)}

    def start(file, out, *flags):
        log = open(root / f"{out}.stdout", "w")
        return subprocess.Popen([sys.executable, "-m", "lmx.cli", "sweep", "run", str(file), "--out", str(root / out),
                                 "--workers", "2", *flags], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def first_checkpoint(out):
        dirs = trial_dirs(out) if (out / "trials").is_dir() else {}
        return KILLED in dirs and bool(checkpoint_steps(dirs[KILLED]))

    main = start(main_file, "main", "--retries", "1")
    killed = None
    try:
        wait_until(lambda: first_checkpoint(root / "main"), 400, "main's first checkpoint of the trial")
        killed = start(kill_file, "killed")
        wait_until(lambda: first_checkpoint(root / "killed"), 300, "the first checkpoint of the trial to kill")
        status = trial_status.read_trial_status(trial_dirs(root / "killed")[KILLED])
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=60)
        main.wait(timeout=600)
    finally:
        for process in (main, killed):
            if process is not None and process.poll() is None:
                process.kill()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JAX_COMPILATION_CACHE_DIR", str(root / "jax-cache"))
        yield {"root": root, "main": root / "main", "main_file": main_file, "main_code": main.returncode,
               "main_stdout": (root / "main.stdout").read_text(), "killed": root / "killed",
               "kill_file": kill_file, "killed_code": killed.returncode, "killed_child": status["pid"]}


def test_two_workers_complete_the_product(runs):
    dirs = trial_dirs(runs["main"])
    manifest = json.loads((runs["main"] / "sweep.json").read_text())
    assert manifest["name"] == "main" and manifest["base"] == "tiny" and len(manifest["trials"]) == 5
    assert {(t["name"], t["id"]) for t in manifest["trials"]} == {tuple(p.name.rsplit("--", 1)) for p in dirs.values()}
    starts = []
    for seed, d_model in PRODUCT:
        run_dir = dirs[f"seed-{seed}_d_model-{d_model}"]
        status = trial_status.read_trial_status(run_dir)
        assert status["status"] == "done" and status["attempts"] == 1 and status["error"] is None, status
        assert status["launcher"] == "local" and status["wall_s"] > 0 and status["pid"] > 0
        assert status["overrides"] == {"train.seed": seed, "model.d_model": d_model}
        assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
        assert checkpoint_steps(run_dir)[-1] == STEPS
        header = (run_dir / "trial.log").read_text().splitlines()[1]
        assert "--set model.d_model=" in header and f"--set optim.warmup_steps={STEPS // 100}" in header
        starts.append(header.split(", cpus ")[1].split(":")[0])
        run = lmx.load(run_dir)
        assert run.step == STEPS and run.config.model.d_model == d_model and run.config.train.seed == seed
        assert run.config.optim.warmup_steps == STEPS // 100  # derived
    assert sorted(starts) == ["0", "0", "1", "1"]  # each worker slot on its own CPU (2 cores)
    assert runs["main_stdout"].count(" done seed-") == 4


def test_failing_trial_is_recorded_with_its_error_and_others_finish(runs):
    [failed] = [d for name, d in trial_dirs(runs["main"]).items() if name.startswith("corpus-")]
    status = trial_status.read_trial_status(failed)
    assert status["status"] == "failed" and status["attempts"] == 2  # --retries 1: one rerun
    assert "exit code 2" in status["error"] and "data.corpus" in status["error"]
    assert "lmx train: error:" in status["error"].splitlines()[-1]
    assert runs["main_code"] == 1  # not every trial done
    assert "rerunning corpus" in runs["main_stdout"] and "1 failed" in runs["main_stdout"]


def test_rerun_skips_done_trials_and_retry_failed_reruns_failures(runs):
    before = {name: trial_status.read_trial_status(d) for name, d in trial_dirs(runs["main"]).items()}
    printed = []
    assert sweep_runner.run_sweep(runs["main_file"], runs["main"], workers=2, print_fn=printed.append) == 1
    assert "0 to run, 0 to resume, 0 to rerun, 4 done, 1 failed" in printed[0]
    assert not any(line.startswith("[") for line in printed)  # nothing started
    assert {name: trial_status.read_trial_status(d) for name, d in trial_dirs(runs["main"]).items()} == before
    printed.clear()
    assert sweep_runner.run_sweep(runs["main_file"], runs["main"], workers=2, retry_failed=True,
                                  print_fn=printed.append) == 1
    after = {name: trial_status.read_trial_status(d) for name, d in trial_dirs(runs["main"]).items()}
    rerun = [name for name in after if after[name]["attempts"] != before[name]["attempts"]]
    assert len(rerun) == 1 and rerun[0].startswith("corpus-") and after[rerun[0]]["attempts"] == 3
    assert sum(line.startswith("[") for line in printed) == 1


def test_killed_sweep_resumes_the_trial_bit_exactly(runs):
    run_dir = trial_dirs(runs["killed"])[KILLED]
    assert runs["killed_code"] == -signal.SIGKILL
    # the trial died with the sweep (death signal), after its first checkpoint and before its last
    wait_until(lambda: trial_status.process_alive(runs["killed_child"], None) is False, 30, "the trial to die")
    assert 100 <= checkpoint_steps(run_dir)[-1] < STEPS and not (run_dir / "summary.json").exists()
    assert trial_status.read_trial_status(run_dir)["status"] == "running"
    printed = []
    trial_status.print_status(runs["killed"], printed.append)
    assert "1 interrupted" in printed[0] and "interrupted" in printed[2]
    printed.clear()
    assert sweep_runner.run_sweep(runs["kill_file"], runs["killed"], dry_run=True, print_fn=printed.append) == 0
    assert "interrupted  resume" in printed[-2]
    assert sweep_runner.run_sweep(runs["kill_file"], runs["killed"], workers=2, print_fn=printed.append) == 0
    status = trial_status.read_trial_status(run_dir)
    assert status["status"] == "done" and status["attempts"] == 2
    assert (run_dir / "trial.log").read_text().count("--resume") == 1
    reference = trial_dirs(runs["main"])[KILLED]
    assert reference.name == run_dir.name  # the same trial id: the same resolved config
    resumed, uninterrupted = lmx.load(run_dir), lmx.load(reference)
    leaves = jax.tree.leaves(jax.device_get(resumed.model)), jax.tree.leaves(jax.device_get(uninterrupted.model))
    assert len(leaves[0]) == len(leaves[1]) > 0
    assert all(np.array_equal(a, b) for a, b in zip(*leaves, strict=True))


# --- dry run and status, without training --------------------------------------------------------


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, cache_dir):
    file = sweep_file(tmp_path / "plan.py", cache_dir, 'grid("model.d_model", [32, 48])')
    printed = []
    out = tmp_path / "out"
    assert sweep_runner.run_sweep(file, out, dry_run=True, print_fn=printed.append) == 0
    assert not out.exists()
    assert printed[0] == f"sweep plan ({file}): 2 trials, base tiny, out {out}"
    assert printed[1].startswith("  fixed: data.cache_dir=") and f"train.steps={STEPS}" in printed[1]
    assert printed[2].split() == ["state", "action", "name", "id", "overrides"]
    for line, d_model in zip(printed[3:5], (32, 48)):
        state, action, name, identifier, override, *derived = line.split()
        assert (state, action, name, override) == ("new", "run", f"d_model-{d_model}", f"model.d_model={d_model}")
        assert len(identifier) == 10 and derived == ["(derived:", f"optim.warmup_steps={STEPS // 100})"]
    assert printed[5] == "dry run: 2 to run, 0 to resume, 0 to rerun, 0 done; nothing started"


def test_status_shows_progress_interrupted_and_errors(tmp_path):
    out = tmp_path / "out"
    trials = [("a", "1111111111", {"status": "done", "wall_s": 75.0}),
              ("b", "2222222222", {"status": "running", "pid": 2 ** 22 + 7, "host": os.uname().nodename,
                                   "started": trial_status.now_iso(), "wall_s": None}),
              ("c", "3333333333", {"status": "failed", "error": "exit code 2\nlmx train: error: boom", "wall_s": 3.0}),
              ("d", "4444444444", None)]
    (out / "trials").mkdir(parents=True)
    (out / "sweep.json").write_text(json.dumps({"name": "s", "trials": [{"name": n, "id": i} for n, i, _ in trials]}))
    for name, identifier, fields in trials:
        run_dir = out / "trials" / f"{name}--{identifier}"
        run_dir.mkdir()
        (run_dir / "config.json").write_text(json.dumps({"train": {"steps": 40}}))
        if fields:
            trial_status.write_trial_status(run_dir, {**trial_status.new_trial_status(name, identifier, {}, "local"),
                                                      **fields})
    (out / "trials" / "b--2222222222" / "metrics.jsonl").write_text('{"step": 10}\n{"step": 20}\n{"step": 3')
    printed = []
    assert trial_status.print_status(out, printed.append) == 0
    assert printed[0] == f"{out}: 4 trials: 1 done, 1 interrupted, 1 failed, 1 pending"
    rows = {line.split()[0]: line.split() for line in printed[2:]}
    assert rows["a"][1:] == ["1111111111", "done", "0/40", "1m15s"]
    assert rows["b"][2:4] == ["interrupted", "20/40"]  # the half-written last row is not read
    assert rows["c"][2] == "failed" and printed[4].endswith("lmx train: error: boom")
    assert rows["d"][2:4] == ["pending", "0/40"]
    with pytest.raises(ConfigError, match="not a sweep directory"):
        trial_status.print_status(tmp_path / "nothing", printed.append)


# --- the launcher's pieces on stand-in processes ------------------------------------------------


def test_cpu_slots_are_disjoint_and_cover_the_cpus():
    assert cpu_slots(2, [0, 1, 2, 3, 4]) == [[0, 1], [2, 3, 4]]
    assert cpu_slots(1, [3, 1]) == [[1, 3]]
    assert cpu_slots(3, [0, 1]) == [[0], [1], [0]]  # more workers than CPUs: shared round-robin
    env = thread_env({"XLA_FLAGS": "--xla_force_host_platform_device_count=2 intra_op_parallelism_threads=9"}, 3)
    assert env["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=2",
                                        "--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=3"]
    assert env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"


PROBE = ("import json, os, sys; print(json.dumps({'cpus': sorted(os.sched_getaffinity(0)), "
         "'xla': os.environ['XLA_FLAGS'], 'omp': os.environ['OMP_NUM_THREADS']})); "
         "print('to stderr', file=sys.stderr); sys.exit(int(sys.argv[1]))")


def _job(tmp_path, name, argv):
    return Job(trials=[], argv=argv, log=tmp_path / name / "trial.log")


def test_local_launcher_pins_logs_and_reports_exit_codes(tmp_path):
    cpus = sorted(os.sched_getaffinity(0))
    jobs = collections.deque(_job(tmp_path, f"j{i}", [sys.executable, "-c", PROBE, str(i)]) for i in range(3))
    started, finished = [], {}
    pool = LocalLauncher(workers=2, print_fn=lambda line: None, poll_seconds=0.01)
    assert pool.run(jobs, lambda job, pid, slot_cpus: started.append((job.log.parent.name, slot_cpus)),
                    lambda job, code, tail: finished.update({job.log.parent.name: (code, tail)})) is None
    assert [name for name, _ in started] == ["j0", "j1", "j2"]
    assert {name: code for name, (code, _) in finished.items()} == {"j0": 0, "j1": 1, "j2": 2}
    slots = dict(started)
    assert set(slots["j0"]).isdisjoint(slots["j1"]) or len(cpus) == 1
    for name, (_, tail) in finished.items():
        probe = json.loads(tail.splitlines()[0])
        assert probe["cpus"] == slots[name] and probe["omp"] == str(len(slots[name]))
        assert f"intra_op_parallelism_threads={len(slots[name])}" in probe["xla"]
        assert tail.splitlines()[1] == "to stderr"
    jobs.append(_job(tmp_path, "j0", [sys.executable, "-c", "print('second attempt')"]))
    pool.run(jobs, lambda *a: None, lambda job, code, tail: finished.update(again=tail))
    assert finished["again"] == "second attempt"  # the tail is this attempt's, the log keeps both
    assert (tmp_path / "j0" / "trial.log").read_text().count("=== lmx sweep") == 2


def test_sigterm_to_the_sweep_stops_trials_as_preempted(tmp_path):
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    jobs = collections.deque([_job(tmp_path, "a", sleeper), _job(tmp_path, "b", sleeper)])
    codes = {}
    pool = LocalLauncher(workers=1, print_fn=lambda line: None, poll_seconds=0.01)
    start = time.monotonic()
    stopped_by = pool.run(jobs, lambda job, pid, cpus: os.kill(os.getpid(), signal.SIGTERM),
                          lambda job, code, tail: codes.update({job.log.parent.name: code}))
    assert stopped_by == "SIGTERM" and time.monotonic() - start < 30
    assert codes == {"a": -signal.SIGTERM} and len(jobs) == 1  # forwarded once; "b" never started
    assert sweep_runner.outcome(codes["a"], tmp_path / "a", "")[0] == "preempted"


@pytest.mark.parametrize("code,summary,expected", [
    (0, "completed", "done"), (0, "preempted", "preempted"), (-signal.SIGTERM, None, "preempted"),
    (143, None, "preempted"), (0, None, "failed"), (2, "completed", "failed"), (-signal.SIGKILL, None, "failed"),
])
def test_outcome_of_a_trial_process(tmp_path, code, summary, expected):
    if summary:
        (tmp_path / "summary.json").write_text(json.dumps({"status": summary}))
    state, error = sweep_runner.outcome(code, tmp_path, "last line")
    assert state == expected
    assert (error is None) == (expected != "failed")
    if code == -signal.SIGKILL:
        assert error == "killed by SIGKILL\nlast line"


def test_one_sweep_run_per_directory(tmp_path):
    with sweep_runner.SweepLock(tmp_path):
        with pytest.raises(ConfigError, match=f"in use by another lmx sweep run \\(pid {os.getpid()}"):
            sweep_runner.SweepLock(tmp_path).__enter__()
    with sweep_runner.SweepLock(tmp_path):  # released on exit
        pass


def test_the_store_is_rebuilt_after_each_trial_and_its_errors_do_not_stop_the_sweep(tmp_path, monkeypatch):
    calls, printed = [], []

    def write_store(out):
        calls.append(out)
        if len(calls) == 2:
            raise OSError("disk full")

    monkeypatch.setattr(sweep_runner, "write_store", write_store)
    trial = Trial(name="a", id="0123456789", overrides={}, config=None, run_dir=tmp_path / "a")
    keeper = sweep_runner._Bookkeeper(tmp_path, "tiny", "local", collections.deque(), 1, printed.append)
    job = Job(trials=[trial], argv=["x"], log=tmp_path / "a" / "trial.log")
    keeper.on_start(job, os.getpid(), [0])
    assert trial_status.read_trial_status(tmp_path / "a")["status"] == "running"
    keeper.on_finish(job, 2, "lmx train: error: boom")
    keeper.on_finish(job, 2, "lmx train: error: boom")
    assert calls == [tmp_path, tmp_path]
    assert printed[-1] == "lmx sweep: could not update the results store: OSError: disk full"
    status = trial_status.read_trial_status(tmp_path / "a")
    assert status["status"] == "failed" and status["error"] == "exit code 2\nlmx train: error: boom"
