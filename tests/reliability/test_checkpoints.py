"""Checkpoint integrity: flipped bytes are caught by the checksums on every restore, a damaged newest step
is passed over on resume and refused by eval/generate/load, partial steps are invisible, and a
checkpoint of the former parameter layout is a one-line error."""

import shutil
import warnings

import jax
import numpy as np
import pytest

import lmx
from lmx.cli import main
from lmx.errors import CheckpointError
from lmx.train.checkpoint import Checkpointer, CheckpointNotice
from lmx.train.loop import train


@pytest.fixture(scope="module")
def run_dir(trained_run):
    return trained_run  # tiny: checkpoints at steps 4 and 8


def _copy(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    return copy


def _params(run_dir, step=None):
    return [np.asarray(x) for x in jax.tree.leaves(lmx.load(run_dir, step=step).model)]


def _array_files(step_dir):
    """The OCDBT data files that hold the arrays of a checkpoint step, largest first."""
    files = [p for p in (step_dir / "state").glob("ocdbt.process_*/d/*") if p.is_file()]
    return sorted(files, key=lambda p: p.stat().st_size, reverse=True)


def _flip(path, fraction):
    data = bytearray(path.read_bytes())
    data[int(len(data) * fraction)] ^= 0x5A
    path.write_bytes(bytes(data))


def _flip_a_parameter(run_copy, abstract):
    """Flip one byte of step 8's array data such that a parameter decodes to different values (which array
    lands in which OCDBT data file varies between runs, so try a few places)."""
    step_dir = run_copy / "checkpoints" / "8"
    reader = Checkpointer(run_copy / "checkpoints", writer=False, async_save=False)
    for path in _array_files(step_dir)[:2]:
        for fraction in (0.5, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6):
            original = path.read_bytes()
            _flip(path, fraction)
            try:
                reader.restore_params(abstract.params, step=8)
            except CheckpointError as exc:
                if "saved checksum" in str(exc):
                    return
            path.write_bytes(original)
    raise AssertionError("no single-byte flip changed a parameter")


def _truncate(step_dir):
    damaged = 0
    for item in sorted(step_dir.rglob("*")):
        if item.is_file() and item.parent.name not in ("meta", "integrity") and item.stat().st_size > 16:
            item.write_bytes(item.read_bytes()[:8])
            damaged += 1
    assert damaged


def test_flipped_bytes_in_an_array_file_are_caught_by_the_checksums(run_dir, abstract, tmp_path):
    copy = _copy(run_dir, tmp_path)
    _flip_a_parameter(copy, abstract)  # a byte inside the compressed data of the arrays
    with pytest.raises(CheckpointError) as info:
        lmx.load(copy)
    message = str(info.value)
    assert "checkpoint step 8" in message and "does not match its saved checksum" in message
    assert "array params." in message
    assert message.endswith("name its step (--step, or step= in Python): 4")
    np.testing.assert_array_equal(_params(copy, step=4)[0], _params(run_dir, step=4)[0])  # a named good step loads


def test_every_flip_inside_array_data_is_detected_or_harmless(run_dir, abstract, tmp_path):
    """A flip anywhere in the array data either stops the restore (checksum or decoding error) or left every
    restored value bit-identical (it hit bytes that are not read): never silently different values."""
    reference = Checkpointer(run_dir / "checkpoints", writer=False, async_save=False)
    _, expected, _, _ = reference.restore(abstract, step=8)
    expected = [np.asarray(x) for x in jax.tree.leaves(expected)]
    caught = 0
    for index, fraction in [(0, 0.1), (0, 0.9), (1, 0.3), (1, 0.7), (2, 0.5)]:
        copy = tmp_path / f"copy{index}-{fraction}"
        shutil.copytree(run_dir / "checkpoints", copy)
        files = _array_files(copy / "8")
        _flip(files[index % len(files)], fraction)
        checkpointer = Checkpointer(copy, writer=False, async_save=False)
        try:
            _, restored, _, _ = checkpointer.restore(abstract, step=8)
        except CheckpointError as exc:
            assert "checkpoint step 8" in str(exc)
            caught += 1
            continue
        for a, b in zip(expected, jax.tree.leaves(restored), strict=True):
            np.testing.assert_array_equal(a, np.asarray(b))
    assert caught >= 3


@pytest.fixture(scope="module")
def abstract(run_dir):
    return _abstract(run_dir)


def _abstract(run_dir):
    from lmx.api import config_for_these_devices
    from lmx.tokenizers import Tokenizer
    from lmx.train.checkpoint import abstract_with_shardings
    from lmx.train.loop import build_trainer

    tokenizer = Tokenizer.load(run_dir / "tokenizer")
    trainer = build_trainer(config_for_these_devices(lmx.load(run_dir).config), tokenizer.token_bytes,
                            token_chars=tokenizer.token_chars)
    return abstract_with_shardings(trainer.abstract_state, trainer.state_shardings)


def test_eval_and_generate_refuse_a_damaged_newest_checkpoint_unless_a_step_is_named(run_dir, abstract, tmp_path,
                                                                                     capsys):
    copy = _copy(run_dir, tmp_path)
    _flip_a_parameter(copy, abstract)
    for argv in (["eval", "--run", str(copy)], ["generate", "--run", str(copy), "--prompt", "def ", "--greedy"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert "checkpoint step 8" in err and "does not match its saved checksum" in err and "--step" in err
    assert main(["eval", "--run", str(copy), "--step", "4", "--batches", "1"]) == 0
    assert "step 4" in capsys.readouterr().out


def test_resume_falls_back_to_the_newest_checkpoint_that_verifies_and_ends_bit_identical(run_dir, abstract,
                                                                                          tmp_path, capsys):
    copy = _copy(run_dir, tmp_path)
    _flip_a_parameter(copy, abstract)
    assert main(["train", "--resume", "--run-dir", str(copy), "--quiet"]) == 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "checkpoint 8" in err and "failed verification" in err and "resuming from step 4" in err
    assert (copy / "checkpoints" / "8.damaged").is_dir()  # kept for a look, out of Orbax's way
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == ["4", "8", "8.damaged"]
    for a, b in zip(_params(run_dir), _params(copy), strict=True):
        np.testing.assert_array_equal(a, b)


def test_truncated_newest_checkpoint_falls_back_on_resume_in_one_line_and_is_refused_by_load(run_dir, tmp_path,
                                                                                             capfd):
    copy = _copy(run_dir, tmp_path)
    _truncate(copy / "checkpoints" / "8")
    with pytest.raises(CheckpointError, match=r"checkpoint step 8 .* is damaged: unreadable .*: 4$"):
        lmx.load(copy)
    assert lmx.load(copy, step=4).step == 4
    assert main(["train", "--resume", "--run-dir", str(copy), "--quiet"]) == 0
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err  # no 'Exception ignored' tracebacks of Orbax's leftover reads
    assert "unreadable" in err and "resuming from step 4" in err


def test_every_checkpoint_damaged_is_a_clear_error(run_dir, abstract, tmp_path):
    copy = _copy(run_dir, tmp_path)
    for step in ("4", "8"):
        _truncate(copy / "checkpoints" / step)
    checkpointer = Checkpointer(copy / "checkpoints", writer=False, async_save=False)
    with pytest.raises(CheckpointError, match="no checkpoint in .* reads and verifies: step 8: unreadable.*step 4"):
        checkpointer.restore(abstract, fallback=True)


def test_checkpoint_without_checksums_restores_with_a_one_line_notice(run_dir, tmp_path, capsys):
    copy = _copy(run_dir, tmp_path)
    shutil.rmtree(copy / "checkpoints" / "8" / "integrity")  # what lmx wrote before checksums existed
    with pytest.warns(CheckpointNotice, match="step 8 .* has no checksums"):
        loaded = lmx.load(copy)
    assert loaded.step == 8
    with warnings.catch_warnings():
        warnings.simplefilter("always", CheckpointNotice)
        assert main(["eval", "--run", str(copy), "--batches", "1"]) == 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("lmx eval: ") and "no checksums" in err, err


def test_partial_checkpoint_is_never_loaded(run_dir, tmp_path):
    copy = _copy(run_dir, tmp_path)
    # What an interrupted save leaves behind: Orbax's temporary directory, never finalised.
    shutil.copytree(copy / "checkpoints" / "8", copy / "checkpoints" / "12.orbax-checkpoint-tmp-1234")
    assert lmx.load(copy).step == 8


def test_failed_background_save_stops_naming_its_step_and_resume_is_bit_identical(tiny, run_dir, tmp_path,
                                                                                   monkeypatch):
    """An injected write error in the asynchronous commit of step 6 (checkpoints every 2 steps)."""
    from orbax.checkpoint._src.path import atomicity

    original = atomicity.AtomicRenameTemporaryPath.finalize

    async def finalize(self):
        if self.get_final().name == "6":
            raise OSError(28, "No space left on device")
        return await original(self)

    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", finalize)
    config = tiny.replace(**{"train.checkpoint_every": 2, "train.async_checkpointing": True})
    run = tmp_path / "run"
    with pytest.raises(CheckpointError) as info:
        train(config, run_dir=run, show_progress=False)
    message = str(info.value)
    assert "saving the checkpoint of step 6" in message and "No space left on device" in message
    assert "earlier checkpoints are intact (newest: step 4)" in message and "--resume" in message
    assert "\n" not in message
    monkeypatch.undo()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["2", "4"]  # no temporary leftovers
    train(config, run_dir=run, resume=True, show_progress=False)
    for a, b in zip(_params(run_dir), _params(run), strict=True):
        np.testing.assert_array_equal(a, b)


def test_restore_checks_the_tree_against_the_model(run_dir, tmp_path):
    copy = _copy(run_dir, tmp_path)
    other = lmx.load(run_dir).config.replace(**{"model.n_layers": 3})
    (copy / "config.json").write_text(other.to_json())
    with pytest.raises(CheckpointError, match=r"has shape \(2, .*\) in the checkpoint but \(3, .*\) in the model"):
        lmx.load(copy)


def test_checkpoint_of_the_former_parameter_paths_is_a_one_line_error(run_dir, abstract, tmp_path, capsys):
    """Before the model restructuring the attention parameters were blocks.attn.* (now blocks.mixer.*)."""
    from lmx.train.integrity import leaf_path

    copy = _copy(run_dir, tmp_path)
    checkpointer = Checkpointer(copy / "checkpoints", writer=False, async_save=False)
    _, state, data, meta = checkpointer.restore(abstract, step=8)
    old = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        name = leaf_path(path, variable_value=True).replace("params.blocks.mixer.", "params.blocks.attn.")
        node = old
        *parents, last = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = leaf
    shutil.rmtree(copy / "checkpoints")
    writer = Checkpointer(copy / "checkpoints", async_save=False)
    writer.save(8, old, data, meta)
    writer.close()
    with pytest.raises(CheckpointError, match="written by an older lmx .* parameter paths changed"):
        lmx.load(copy)
    assert main(["eval", "--run", str(copy)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "params.blocks.mixer." in err and "params.blocks.attn." in err


def test_params_only_restore_equals_the_full_restore(run_dir, abstract):
    from flax import nnx

    run = lmx.load(run_dir)  # the params-only path
    checkpointer = Checkpointer(run_dir / "checkpoints", async_save=False, writer=False)
    step, state, _, _ = checkpointer.restore(abstract)
    from lmx.api import config_for_these_devices
    from lmx.train.loop import build_trainer

    trainer = build_trainer(config_for_these_devices(run.config), run.tokenizer.token_bytes,
                            token_chars=run.tokenizer.token_chars)
    full = jax.tree.leaves(nnx.state(nnx.merge(trainer.graphdef, state["params"]), nnx.Param))
    ours = jax.tree.leaves(nnx.state(run.model, nnx.Param))
    assert step == run.step == 8 and len(full) == len(ours) > 0
    for a, b in zip(full, ours):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
