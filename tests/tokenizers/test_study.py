"""experiments/tokenizers.py in its quick mode: two tiny runs, the JSON, table and figure."""

import importlib.util
import json
from pathlib import Path

import pytest

STUDY = Path(__file__).resolve().parents[2] / "experiments" / "tokenizers.py"


@pytest.mark.slow
def test_quick_study_writes_json_table_and_figure(tmp_path):
    spec = importlib.util.spec_from_file_location("lmx_tokenizer_study", STUDY)
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    out = tmp_path / "results"
    assert study.main(["--quick", "--steps", "2", "--out", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    result = json.loads((out / "tokenizers.json").read_text())
    rows = {r["kind"]: r for r in result["rows"]}
    assert set(rows) == {"bytes", "byte_bpe"}
    assert rows["bytes"]["tokens_per_byte"] == pytest.approx(1.0)
    assert rows["byte_bpe"]["tokens_per_byte"] < 1.0
    for row in rows.values():  # the same FLOP budget (to within one step)
        assert row["train_flops"] == pytest.approx(result["budget_train_flops"], rel=0.5)
        assert row["val_bits_per_byte"] > 0 and row["val_bits_per_char"] >= row["val_bits_per_byte"] * 0.999
    assert rows["bytes"]["steps"] >= rows["byte_bpe"]["steps"]  # a smaller vocabulary buys as many steps or more
    assert "| bytes | 259 |" in (out / "tokenizers.md").read_text()
    assert (out / "tokenizers.png").read_bytes()[:4] == b"\x89PNG"
