"""Fuzzed configs and overrides, tokenizer mismatch, safe loading, unwritable or full output."""

import re
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmx.cli import main
from lmx.config import Config, leaf_keys
from lmx.errors import CheckpointError, ConfigError

KEYS = sorted(leaf_keys())
junk = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
values = st.one_of(junk, st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True).map(str),
                   st.sampled_from(["-1", "0", "1e309", "nan", "inf", "true", "{}", "[]", "{\"data\": 0}", "none"]))


@settings(max_examples=300, deadline=None)
@given(key=st.one_of(st.sampled_from(KEYS), junk), value=values)
def test_any_override_gives_a_config_or_a_config_error_naming_the_field(key, value):
    try:
        Config().with_overrides([f"{key}={value}"])
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message
        # The message names the setting: the key itself, or (cross-field rules) its field name. The key
        # is what precedes the first "=" (a generated key may itself contain one).
        field = f"{key}={value}".partition("=")[0].strip().split(".")[-1]
        assert message.startswith("--set") or (field and field in message), (key, message)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(KEYS), value=st.sampled_from(["-5", "0", "abc", "1e309", "{\"x\": 1}", "nan"]))
def test_cli_rejects_invalid_overrides_with_exit_2_and_writes_nothing(tmp_path, capsys, key, value):
    run_dir = tmp_path / "fuzz-run"
    try:
        Config().with_overrides([f"{key}={value}"])
    except ConfigError:
        pass
    else:
        return  # a valid override: nothing to check here
    assert main(["train", "--config", "tiny", "--quiet", "--run-dir", str(run_dir), "--set", f"{key}={value}"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not run_dir.exists()


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "/abs", ""])
def test_run_names_cannot_escape_the_runs_directory(name):
    with pytest.raises(ConfigError, match="name"):
        Config(name=name)


def test_nothing_in_lmx_unpickles():
    root = Path(__file__).resolve().parents[2] / "lmx"
    pattern = re.compile(r"\bpickle\b|allow_pickle\s*=\s*True|yaml\.load\(|cloudpickle|dill\b")
    offenders = [f"{p}:{i}" for p in root.rglob("*.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, offenders


def test_unwritable_run_directory_is_refused_before_training(tmp_path, capsys, cache_dir):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code = main(["train", "--config", "tiny", "--quiet", "--run-dir", str(blocker / "run"),
                 "--set", f"data.cache_dir={cache_dir}"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "cannot write" in err and len(err.splitlines()) == 1


def test_full_disk_is_refused_before_training(tiny, tmp_path, monkeypatch):
    from lmx.train import run_dir as run_dir_module
    from lmx.train.loop import train

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(run_dir_module.shutil, "disk_usage",
                        lambda path: usage._replace(free=1024))
    with pytest.raises(CheckpointError, match="MiB free"):
        train(tiny, run_dir=tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run").exists()


def test_tokenizer_mismatch_is_refused_unless_forced(tiny, trained_run, tmp_path):
    from lmx.train.loop import train

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    other = tiny.replace(**{"data.tokenizer_train_bytes": 150_000, "train.steps": 12})
    (run / "config.json").write_text(other.to_json())
    with pytest.raises(CheckpointError) as info:
        train(other, run_dir=run, resume=True, show_progress=False)
    assert info.value.args[0].count("tokenizer fingerprint") == 1
    assert re.search(r"[0-9a-f]{16} differs from the checkpoint's [0-9a-f]{16}", str(info.value))
    summary = train(other, run_dir=run, resume=True, show_progress=False, force_tokenizer=True)
    assert summary["steps"] == 12


def _refused_inputs(tmp_path) -> dict[str, tuple[str, str]]:
    """name -> (--set override, a word the one-line error must contain)."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models

    empty = tmp_path / "empty-corpus"
    empty.mkdir()
    bad = tmp_path / "bad-tokenizer.json"
    bad.write_text("{ not json")
    big = tmp_path / "big-tokenizer.json"  # 400 words: more ids than tiny's model.vocab_size of 320
    vocab = {f"w{i}": i for i in range(400)}
    HFTokenizer(models.WordLevel(vocab, unk_token="w0")).save(str(big))
    return {
        "missing corpus": (f"data.corpus={tmp_path / 'no-such-corpus'}", "data.corpus"),
        "empty corpus": (f"data.corpus={empty}", "data.corpus"),
        "glob without a match": (f"data.corpus={tmp_path / '*.nothing'}", "data.corpus"),
        "bad tokenizer file": (f"data.tokenizer=file:{bad}", "data.tokenizer"),
        "vocabulary too large": (f"data.tokenizer=file:{big}", "model.vocab_size"),
    }


def test_refused_corpus_or_tokenizer_writes_nothing(tmp_path, capsys, cache_dir):
    """A new run directory is not created; an existing run (even with --force) is left as it was."""
    existing = tmp_path / "existing"
    existing.mkdir()
    config = Config().with_overrides([f"data.cache_dir={cache_dir}"])
    (existing / "config.json").write_text(config.to_json())
    (existing / "metrics.jsonl").write_text('{"step": 1, "loss": 5.0}\n')
    before = {p.name: p.read_bytes() for p in existing.iterdir()}
    for name, (override, word) in _refused_inputs(tmp_path).items():
        run_dir = tmp_path / "new-run"
        argv = ["train", "--config", "tiny", "--quiet", "--set", f"data.cache_dir={cache_dir}", "--set", override]
        assert main([*argv, "--run-dir", str(run_dir)]) == 2, name
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and word in err, (name, err)
        assert not run_dir.exists(), name
        assert main([*argv, "--run-dir", str(existing), "--force"]) == 2, name
        capsys.readouterr()
        assert {p.name: p.read_bytes() for p in existing.iterdir()} == before, name


def test_the_corrected_command_runs_where_the_refused_one_was_refused(tmp_path, capsys, cache_dir):
    run_dir = tmp_path / "run"
    argv = ["train", "--config", "tiny", "--quiet", "--run-dir", str(run_dir), "--set", f"data.cache_dir={cache_dir}",
            "--set", "train.steps=2", "--set", "train.eval_every=2", "--set", "train.checkpoint_every=2",
            "--set", "eval.sample_tokens=0"]
    assert main([*argv, "--set", f"data.corpus={tmp_path / 'typo'}"]) == 2
    assert not run_dir.exists()
    assert main(argv) == 0  # not "holds a different run"
    assert (run_dir / "summary.json").is_file()
