"""The `lmx` command's main paths and its error contract: one line on stderr, exit code 2, nothing written."""

import json
import math
import re
import shutil

import pytest

import lmx
from lmx.cli import main
from lmx.errors import CheckpointError


def _one_line_error(capsys, *words):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, err
    return err


def _greedy_by_full_forwards(model, tokenizer, prompt: str, n: int) -> str:
    """Greedy continuation with one uncached full forward per token, EOS ending it (not part of the text)."""
    import jax.numpy as jnp
    import numpy as np

    ids, new = tokenizer.encode(prompt), []
    for _ in range(n):
        logits = np.asarray(model(jnp.asarray([ids + new], jnp.int32))[0, -1])[: tokenizer.vocab_size]
        token = int(np.argmax(logits))
        if token == tokenizer.eos_id:
            break
        new.append(token)
    return tokenizer.decode(new)


def test_train_prints_summary_and_samples(cli_run):
    import jax
    from flax import nnx

    from lmx.api import load

    summary = json.loads((cli_run / "summary.json").read_text())
    assert summary["steps"] == 8
    printed = (cli_run.parent / "train_stdout.txt").read_text()  # what `lmx train --quiet` printed
    lines = printed.splitlines()
    assert any(line.strip() == "lmx train: summary" for line in lines), printed
    rows = {}
    for line in lines:
        cells = [c.strip() for c in re.split("[│|]", line)[1:-1]]
        if len(cells) == 2:
            rows[cells[0]] = cells[1]
    assert list(rows) == ["parameters", "tokens seen", "training FLOPs", "validation loss", "validation perplexity",
                          "validation bits per byte", "validation bits per char", "throughput", "wall time",
                          "run directory"], printed
    run = load(cli_run)
    config = run.config
    params = sum(x.size for x in jax.tree.leaves(nnx.state(run.model, nnx.Param)))
    embedding = config.model.vocab_size * config.model.d_model * (1 if config.model.tie_embeddings else 2)
    assert rows["parameters"] == f"{params:,} ({params - embedding:,} non-embedding)"
    assert rows["tokens seen"] == f"{8 * config.data.batch_size * config.data.seq_len:,}"  # steps x batch x seq
    assert rows["validation loss"] == f"{summary['val_loss']:.4f} nats/token"
    assert float(rows["validation perplexity"]) == pytest.approx(math.exp(summary["val_loss"]), abs=0.005)
    assert rows["run directory"] == str(cli_run)
    # one greedy sample per configured prompt, its text the greedy continuation of the final model
    samples = [line for line in lines if line.startswith("greedy sample")]
    assert len(samples) == len(config.eval.sample_prompts) == 1, printed
    prompt = config.eval.sample_prompts[0]
    completion = _greedy_by_full_forwards(run.model, run.tokenizer, prompt, config.eval.sample_tokens)
    assert samples[0] == f"greedy sample {prompt!r} -> {prompt + completion!r}", printed


def test_eval_reports_the_final_validation_loss(cli_run, capsys):
    assert main(["eval", "--run", str(cli_run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    summary = json.loads((cli_run / "summary.json").read_text())
    assert result["step"] == 8
    assert result["loss"] == pytest.approx(summary["val_loss"], rel=1e-6)
    assert result["bits_per_byte"] == pytest.approx(summary["val_bits_per_byte"], rel=1e-6)


def test_info_counts_parameters(capsys):
    from lmx.config import load_config
    from lmx.nn import param_count

    assert main(["info", "--config", "tiny", "--json", "--set", "model.n_layers=3"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params"] == param_count(load_config("tiny", ["model.n_layers=3"]).model)
    assert info["n_layers"] == 3


def test_help_exits_zero(capsys):
    for argv in (["--help"], ["train", "--help"], ["eval", "--help"], ["info", "--help"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0


@pytest.mark.parametrize(
    "override, words",
    [
        ("model.nope=1", ["model.nope", "unknown"]),
        ("model.d_model=wide", ["model.d_model", "integer"]),
        ("model.n_heads=5", ["n_heads=5", "d_model"]),
        ("model.n_kv_heads=3", ["n_kv_heads=3"]),
        ("optim.lr=-1", ["optim.lr", "positive"]),
        ("train.steps=0", ["train.steps"]),
        ("data.batch_size=0", ["data.batch_size"]),
        ("data.corpus=/nonexistent/corpus/dir", ["data.corpus", "/nonexistent/corpus/dir"]),
        ("mesh.shape={\"data\": 3}", ["mesh.shape", "3"]),
    ],
)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, cache_dir, override, words):
    run_dir = tmp_path / "run"
    code = main(["train", "--config", "tiny", "--quiet", "--run-dir", str(run_dir),
                 "--set", f"data.cache_dir={cache_dir}", "--set", override])
    assert code == 2
    _one_line_error(capsys, *words)
    assert not run_dir.exists()  # nothing written, a refused corpus included


def test_empty_corpus_is_refused(tmp_path, capsys, cache_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(["train", "--config", "tiny", "--quiet", "--run-dir", str(tmp_path / "run"),
                 "--set", f"data.cache_dir={cache_dir}", "--set", f"data.corpus={empty}"])
    assert code == 2
    _one_line_error(capsys, "data.corpus")


def test_existing_run_with_other_config_is_refused_and_untouched(cli_run, capsys, cache_dir):
    before = {p.name: p.stat().st_mtime_ns for p in cli_run.iterdir()}
    config_text = (cli_run / "config.json").read_text()
    code = main(["train", "--config", "tiny", "--quiet", "--run-dir", str(cli_run),
                 "--set", f"data.cache_dir={cache_dir}", "--set", "model.d_model=64"])
    assert code == 2
    _one_line_error(capsys, "different config", "--force")
    assert (cli_run / "config.json").read_text() == config_text
    assert {p.name: p.stat().st_mtime_ns for p in cli_run.iterdir()} == before


def test_same_config_without_resume_is_refused(cli_run, capsys, cache_dir):
    code = main(["train", "--config", "tiny", "--quiet", "--run-dir", str(cli_run),
                 "--set", f"data.cache_dir={cache_dir}"])
    assert code == 2
    _one_line_error(capsys, "--resume")


def test_eval_of_a_missing_or_damaged_run(tmp_path, capsys, cli_run):
    assert main(["eval", "--run", str(tmp_path / "nothing")]) == 2
    _one_line_error(capsys, "not an lmx run directory")
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(cli_run, damaged)
    for step_dir in (damaged / "checkpoints").iterdir():
        for item in step_dir.rglob("*"):
            if item.is_file() and item.stat().st_size > 0 and "state" in str(item):
                item.write_bytes(b"\0" * 7)
    assert main(["eval", "--run", str(damaged)]) == 2
    _one_line_error(capsys, "checkpoint")


def test_a_checkpoint_of_another_parameter_layout_is_one_clear_error(cli_run, tmp_path, capsys):
    """A checkpoint whose parameter tree differs from the model's (lmx 0.1 runs: blocks.attn.*, now
    blocks.mixer.*) used to restore with placeholders and fail later with a JAX traceback. Here the
    run's config asks for a learned position table the checkpoint never held."""
    other = tmp_path / "other_layout"
    shutil.copytree(cli_run, other)
    config = json.loads((other / "config.json").read_text())
    config["model"]["position"]["kind"] = "learned"
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"older lmx or another model: its parameter paths changed .*params\.positions"):
        lmx.load(other)
    assert main(["eval", "--run", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "older lmx" in err


def test_bad_counts_of_eval_and_info_are_refused(tmp_path, capsys):
    assert main(["eval", "--run", str(tmp_path), "--batches", "0"]) == 2
    _one_line_error(capsys, "--batches", ">= 1")
    assert main(["info", "--config", "tiny", "--sharding", "--devices", "0"]) == 2
    _one_line_error(capsys, "--devices", ">= 1")


def test_resume_errors_name_the_flag_the_user_typed(tmp_path, capsys):
    assert main(["train", "--resume", "--run-dir", str(tmp_path / "nothing")]) == 2
    err = _one_line_error(capsys, "--run-dir:", "not an lmx run directory")
    assert "--run:" not in err
