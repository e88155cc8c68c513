"""The Cloud TPU launcher's commands: every option reaches them, in the order they must run."""

import shlex
from pathlib import Path

import pytest

from lmx.errors import ConfigError
from lmx.sweep.launchers.tpu import TpuJob, TpuOptions, commands, dry_run_lines, vm_name


def _job(i: int, resume: bool = False) -> TpuJob:
    trial_dir = f"n_layers-{i}--id{i}"
    return TpuJob("Depth_Width", f"id{i}", trial_dir, Path("/out/trials") / trial_dir,
                  ("--config", "default", "--set", f"model.n_layers={i}", "--set", 'mesh.shape={"fsdp": -1}'),
                  resume=resume)


def test_vm_names_follow_the_tpu_rules():
    assert vm_name("Depth_Width", "0a1b2c3d4e") == "lmx-depth-width-0a1b2c3d4e"
    long = vm_name("x" * 200, "0a1b2c3d4e")
    assert len(long) <= 63 and long.endswith("-0a1b2c3d4e") and long.startswith("lmx-x")


def test_queued_spot_trial_creates_runs_copies_back_and_deletes_its_slice():
    options = TpuOptions(zone="us-west4-a", accelerator_type="v5litepod-8", version="v2-alpha-tpuv5-lite",
                         project="my-proj", mode="queued", spot=True, delete=True)
    lines = dry_run_lines([_job(2, resume=True)], options)
    vm = "lmx-depth-width-id2"
    assert lines[0] == f"# trial n_layers-2--id2 on {vm}"
    create = lines[1]
    assert create.startswith(f"gcloud compute tpus queued-resources create {vm} --node-id={vm}")
    for flag in ("--zone=us-west4-a", "--project=my-proj", "--accelerator-type=v5litepod-8",
                 "--runtime-version=v2-alpha-tpuv5-lite", "--spot"):
        assert flag in create.split()
    train = next(line for line in lines if "lmx.cli train" in line)
    command = shlex.split(train)[-1]  # '--command=cd ~/lmx && ... lmx.cli train ...'
    assert command.startswith("--command=cd ~/lmx && LMX_DISTRIBUTED=auto python3 -m lmx.cli train ")
    words = shlex.split(command.split(" && ", 1)[1])
    assert words[words.index("--config") + 1] == "default"
    assert words[words.index("--run-dir") + 1] == "runs/sweeps/depth-width/n_layers-2--id2"
    assert "model.n_layers=2" in words and 'mesh.shape={"fsdp": -1}' in words
    assert "--resume" in words and "--quiet" in words and "--worker=all" in train.split()
    fetch, delete = lines[-2], lines[-1]
    assert fetch == (f"gcloud compute tpus tpu-vm scp --recurse "
                     f"'{vm}:~/lmx/runs/sweeps/depth-width/n_layers-2--id2' /out/trials/ --worker=0 "
                     "--zone=us-west4-a --project=my-proj")
    assert delete == f"gcloud compute tpus queued-resources delete {vm} --zone=us-west4-a --project=my-proj --force --quiet"
    assert lines.index(create) < lines.index(train) < lines.index(fetch) < lines.index(delete)


def test_pool_mode_reuses_existing_slices_round_robin_and_creates_nothing():
    options = TpuOptions(zone="z", mode="pool", pool=("slice-a", "slice-b"))
    jobs = [_job(i) for i in range(3)]
    lines = dry_run_lines(jobs, options)
    assert [line for line in lines if line.startswith("#")] == [
        "# trial n_layers-0--id0 on slice-a", "# trial n_layers-1--id1 on slice-b", "# trial n_layers-2--id2 on slice-a"]
    assert not any("create" in line or "delete" in line for line in lines)
    assert all("--resume" not in line for line in lines)
    assert len(commands(jobs[0], "slice-a", options)) == 2  # launch, copy back


@pytest.mark.parametrize("options, setting", [
    (TpuOptions(zone=""), "--tpu-zone"),
    (TpuOptions(zone="z", mode="pod"), "--tpu-mode"),
    (TpuOptions(zone="z", mode="pool"), "--tpu-pool"),
    (TpuOptions(zone="z", pool=("a",)), "--tpu-pool"),
    (TpuOptions(zone="z", spot=True), "--tpu-spot"),
    (TpuOptions(zone="z", mode="pool", pool=("a",), delete=True), "--tpu-delete"),
    (TpuOptions(zone="z", mode="pool", pool=("Bad_Name",)), "--tpu-pool"),
])
def test_bad_options_are_one_line_errors_naming_the_flag(options, setting):
    with pytest.raises(ConfigError, match=f"^{setting}:") as info:
        dry_run_lines([_job(0)], options)
    assert "\n" not in str(info.value)
