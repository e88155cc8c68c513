"""`lmx info --sharding`: layout of the train state over an abstract mesh (no devices needed)."""

import json

import pytest

from lmx.cli import main
from lmx.config import load_config
from lmx.errors import ConfigError
from lmx.parallel.report import format_report
from lmx.train.state import sharding_report


def test_fsdp_over_8_abstract_devices_divides_params_and_opt_state_by_8():
    config = load_config("tiny", ["mesh.strategy=fsdp", 'mesh.shape={"fsdp": -1}'])
    report = sharding_report(config, n_devices=8)
    assert report["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1, "expert": 1}
    per, glob = report["bytes_per_device"], report["bytes_global"]
    assert per["params"] * 8 == glob["params"]
    assert per["opt_state"] < glob["opt_state"] / 7  # moments sharded; only the scalar counters replicated
    assert glob["opt_state"] >= 2 * glob["params"]  # Adam moments
    embed = next(r for r in report["parameters"] if r["name"] == "embed")
    assert embed == {"name": "embed", "shape": [320, 32], "dtype": "float32", "logical_axes": ["vocab", "embed"],
                     "spec": "P(None, 'fsdp')", "bytes_per_device": 320 * 32 * 4 // 8}
    # which attention kernel this config runs here (auto resolves to xla on CPU)
    assert report["attention_impl"] == {"config": config.model.attention_impl, "backend": "cpu", "runs": "xla"}


def test_dp_replicates_everything():
    report = sharding_report(load_config("tiny"), n_devices=4)
    assert report["bytes_per_device"]["params"] == report["bytes_global"]["params"]


def test_indivisible_axis_is_reported_before_anything_runs():
    config = load_config("tiny", ["mesh.strategy=tp", 'mesh.shape={"data": -1, "tensor": 4}'])
    with pytest.raises(ConfigError, match=r"^mesh.shape: parameter blocks.mixer.key dimension 2 \(kv_heads"):
        sharding_report(config, n_devices=16)


def test_cli_info_sharding(capsys):
    args = ["info", "--config", "tiny", "--sharding", "--set", "mesh.strategy=fsdp_tp",
            "--set", 'mesh.shape={"fsdp": 4, "tensor": 2}']
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "strategy fsdp_tp, mesh data=1 x fsdp=4 x tensor=2 x expert=1 (8 devices" in text
    assert "embed                   320x32    vocab,embed" in text
    assert main(args + ["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["devices"] == 8 and len(report["parameters"]) == 11
    assert format_report(report).splitlines()[0] == text.splitlines()[0]


def test_cli_info_names_the_attention_kernel(capsys):
    assert main(["info", "--config", "tiny", "--json", "--set", "model.attention.kernel=auto"]) == 0
    assert json.loads(capsys.readouterr().out)["attention_kernel"] == "xla (model.attention.kernel=auto on cpu)"
