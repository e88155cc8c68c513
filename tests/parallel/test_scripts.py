"""The launch scripts' --dry-run prints exactly the commands they would run."""

import shlex
import subprocess

from tests.parallel.conftest import ROOT

SCRIPTS = ROOT / "scripts"
LMX_ARGS = ["--config", "default", "--set", 'mesh.shape={"fsdp": -1}', "--set", "mesh.strategy=fsdp"]


def _dry(script, *args):
    proc = subprocess.run(["bash", str(SCRIPTS / script), *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_tpu_vm_dry_run():
    lines = _dry("launch_tpu_vm.sh", "--name", "lmx-v5", "--zone", "us-west4-a", "--project", "my-proj",
                 "--dry-run", "--", *LMX_ARGS)
    common = "--zone=us-west4-a --project=my-proj"
    assert lines[:3] == [
        f"gcloud compute tpus tpu-vm create lmx-v5 {common} --accelerator-type=v5litepod-16 "
        "--version=v2-alpha-tpuv5-lite",
        f"tar -czf /tmp/lmx-src-lmx-v5.tar.gz -C {ROOT} --exclude=.git --exclude=.venv --exclude=.cache "
        "--exclude=runs .",
        f"gcloud compute tpus tpu-vm scp /tmp/lmx-src-lmx-v5.tar.gz lmx-v5:lmx-src.tar.gz --worker=all {common}",
    ]
    install, train = shlex.split(lines[3]), shlex.split(lines[4])
    assert install[:9] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "lmx-v5", "--worker=all",
                           "--zone=us-west4-a", "--project=my-proj"]
    assert install[9] == "--command=mkdir -p ~/lmx && tar -xzf ~/lmx-src.tar.gz -C ~/lmx && cd ~/lmx && " \
                         "pip install -q -e . 'jax[tpu]'"
    assert train[:9] == install[:9] and len(lines) == 5
    remote = train[9].removeprefix("--command=")
    assert shlex.split(remote) == ["cd", "~/lmx", "&&", "LMX_DISTRIBUTED=auto", "python3", "-m", "lmx.cli",
                                   "train", *LMX_ARGS]


def test_tpu_queued_resource_dry_run():
    lines = _dry("launch_tpu_vm.sh", "--name", "q1", "--zone", "z", "--queued", "--spot",
                 "--accelerator-type", "v4-16", "--version", "tpu-ubuntu2204-base", "--dry-run", "--", "--config", "tiny")
    assert lines[:2] == [
        "gcloud compute tpus queued-resources create q1 --node-id=q1 --zone=z --accelerator-type=v4-16 "
        "--runtime-version=tpu-ubuntu2204-base --spot",
        "gcloud compute tpus queued-resources describe q1 --zone=z '--format=value(state.state)'",
    ]
    assert lines[-1].endswith("python3 -m lmx.cli train --config tiny'")


def test_gpu_multinode_ssh_dry_run():
    lines = _dry("launch_gpu_multinode.sh", "--hosts", "n1,n2", "--workdir", "/srv/lmx", "--dry-run", "--", *LMX_ARGS)
    assert len(lines) == 2
    for i, line in enumerate(lines):
        ssh, host, remote = shlex.split(line)
        assert (ssh, host) == ("ssh", f"n{i + 1}")
        assert shlex.split(remote) == ["cd", "/srv/lmx", "&&", "LMX_COORDINATOR=n1:12355", "LMX_NUM_PROCESSES=2",
                                       f"LMX_PROCESS_ID={i}", "python", "-m", "lmx.cli", "train", *LMX_ARGS]
    assert lines[0] == ("ssh n1 'cd /srv/lmx && LMX_COORDINATOR=n1:12355 LMX_NUM_PROCESSES=2 LMX_PROCESS_ID=0 "
                        "python -m lmx.cli train --config default --set '\\''mesh.shape={\"fsdp\": -1}'\\'' "
                        "--set mesh.strategy=fsdp'")


def test_gpu_multinode_slurm_dry_run():
    lines = _dry("launch_gpu_multinode.sh", "--slurm", "--nodes", "2", "--port", "4000", "--workdir", "/srv/lmx",
                 "--dry-run", "--", "--config", "default")
    assert lines == [
        "srun --nodes=2 --ntasks-per-node=1 bash -c 'cd /srv/lmx && LMX_COORDINATOR=$(scontrol show hostnames "
        "\"$SLURM_JOB_NODELIST\" | head -n1):4000 LMX_NUM_PROCESSES=$SLURM_NTASKS LMX_PROCESS_ID=$SLURM_PROCID "
        "python -m lmx.cli train --config default'"
    ]


def test_missing_arguments_fail_with_one_line():
    proc = subprocess.run(["bash", str(SCRIPTS / "launch_gpu_multinode.sh"), "--dry-run", "--", "--config", "tiny"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("launch_gpu_multinode.sh: --hosts")
