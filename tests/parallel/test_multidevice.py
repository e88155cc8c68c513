"""Sharded training on 8 forced host devices (subprocess) equals single-device training.

Related equivalences tested elsewhere (not duplicated here): scan == unrolled loop and remat
policies give the same gradients (tests/nn/test_transformer.py::test_scan_equals_unrolled,
::test_remat_policies_give_the_same_gradients); gradient accumulation == one big batch
(tests/train/test_step.py::test_gradient_accumulation_equals_one_big_batch).
"""

import pytest

from tests.parallel.conftest import run_worker

STRATEGIES = ("dp", "fsdp", "tp", "fsdp_tp")


@pytest.fixture(scope="module")
def strategies():
    return run_worker("strategies")


@pytest.mark.parametrize("strategy", STRATEGIES + ("fsdp+activations", "fsdp_tp+activations"))
def test_sharded_training_matches_single_device_for_5_steps(strategies, strategy):
    assert strategies["device_count"] == 8
    single, sharded = strategies["single"], strategies[strategy]
    assert len(sharded) == len(single) == 5
    assert sharded == pytest.approx(single, abs=1e-5, rel=0)
    assert single[-1] < single[0]  # it trained


def test_axis_not_dividing_a_dimension_names_parameter_axis_and_sizes(strategies):
    message = strategies["kv_heads_error"]
    assert message.startswith("mesh.shape: parameter blocks.mixer.key dimension 2 (kv_heads, model.n_kv_heads)")
    assert "size 2" in message and "tensor=4" in message


def test_global_batch_not_divisible_by_data_parallel_size(strategies):
    assert strategies["batch_error"].startswith("data.batch_size: 6 is not divisible by the data-parallel size 8")


def test_mesh_size_not_matching_device_count(strategies):
    assert strategies["mesh_error"] == "mesh.shape: {'data': 3} uses 3 devices but 8 are available"


def test_checkpoint_restores_across_meshes_with_identical_eval_loss(tmp_path):
    out = run_worker("restore", str(tmp_path / "ckpt"))
    saved = out["saved_eval"]
    assert out["fsdp4"]["embed_devices"] == 4
    assert out["tensor2_data2"]["embed_devices"] == 4 and out["single"]["embed_devices"] == 1
    for name in ("fsdp4", "tensor2_data2", "single"):
        assert out[name]["step"] == 3
        assert out[name]["eval"] == pytest.approx(saved, rel=1e-6), name
