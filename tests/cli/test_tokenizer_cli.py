"""`lmx tokenizer train` and `lmx tokenizer inspect`."""

import json

import pytest

from lmx.cli import main
from lmx.config import DataConfig
from lmx.data import get_tokenizer
from lmx.data.corpus import load_corpus
from lmx.tokenizers import Tokenizer, tokenizer_kind


def _json_out(capsys):
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("kind", ["unigram", "wordpiece"])
def test_train_then_inspect(kind, text_dir, tmp_path, capsys):
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--kind", kind, "--vocab-size", "600", "--out", str(out),
                 "--special-token", "<|mask|>", "--num-sentinels", "2", "--json", str(text_dir)]) == 0
    info = _json_out(capsys)
    assert info["kind"] == kind and info["vocab_size"] <= 600 and info["trained_on_documents"] == 24
    assert info["special_tokens"]["<|mask|>"] == 3 and info["special_tokens"]["<|sentinel_1|>"] == 5
    tok = Tokenizer.load(out)
    assert tok.fingerprint == info["fingerprint"]

    text = "def add(a, b):  # naïve 🎉"
    assert main(["tokenizer", "inspect", str(out), "--text", text, "--json"]) == 0
    shown = _json_out(capsys)
    assert shown["ids"] == tok.encode(text) and len(shown["pieces"]) == len(shown["ids"])
    assert shown["round_trip"] and shown["bytes_accounted"] == len(text.encode())
    assert shown["chars_accounted"] == len(text) and shown["words"] == 6
    assert shown["tokens_per_byte"] == pytest.approx(len(shown["ids"]) / len(text.encode()))

    assert main(["tokenizer", "inspect", str(out), "--text", text]) == 0
    printed = capsys.readouterr().out
    assert "pieces:" in printed and "tokens/byte" in printed and "tokens/word" in printed


def test_inspect_a_file_and_the_bytes_kind(tmp_path, capsys):
    assert main(["tokenizer", "train", "--kind", "bytes", "--vocab-size", "259", "--out", str(tmp_path / "b"),
                 str(tmp_path)]) == 0
    assert "trained bytes tokenizer: 259 ids" in capsys.readouterr().out
    assert main(["tokenizer", "inspect", str(tmp_path / "b"), "--text", "é", "--json"]) == 0
    assert _json_out(capsys)["ids"] == [0xC3, 0xA9]


def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    for missing in ("missing.json", "missing-dir"):
        assert main(["tokenizer", "inspect", str(tmp_path / missing), "--text", "x"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and missing in err and "does not exist" in err
    assert main(["tokenizer", "train", "--kind", "bpe", "--vocab-size", "100", "--out", str(tmp_path / "t"),
                 str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.vocab_size" in err
    assert main(["tokenizer", "train", "--kind", "bpe", "--vocab-size", "400", "--out", str(tmp_path / "t"),
                 str(tmp_path / "nothing-here")]) == 2
    assert "data.corpus" in capsys.readouterr().err


def test_out_naming_an_existing_file_is_refused_before_training(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("a file")
    assert main(["tokenizer", "train", "--kind", "bytes", "--vocab-size", "259", "--out", str(taken)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--out" in err and "not a directory" in err
    assert taken.read_text() == "a file"


def test_a_directory_written_by_tokenizer_train_is_accepted_as_file_dir(text_dir, tmp_path, capsys):
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--kind", "bpe", "--vocab-size", "300", "--out", str(out), str(text_dir)]) == 0
    capsys.readouterr()
    saved = Tokenizer.load(out)
    setting = f"file:{out}"
    assert tokenizer_kind(setting) == "bpe"
    tok = get_tokenizer(DataConfig(tokenizer=setting), 320, load_corpus(str(text_dir)))
    assert tok.fingerprint == saved.fingerprint
    assert main(["tokenizer", "inspect", str(tmp_path), "--text", "x"]) == 2  # a directory without a tokenizer
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "name a tokenizer file" in err
