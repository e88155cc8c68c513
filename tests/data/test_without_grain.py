"""Tokenizers, corpora and decoding import where grain is missing (grain is only for training input)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import importlib.abc, sys

class NoGrain(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "grain" or name.startswith("grain."):
            raise ModuleNotFoundError("No module named 'grain'", name="grain")
        return None

sys.meta_path.insert(0, NoGrain())
import lmx.data, lmx.tokenizers
import lmx.decode.text, lmx.decode.beam, lmx.decode.speculative
from lmx.tokenizers.bytes import BytesTokenizer
assert lmx.tokenizers.Tokenizer is not None and "grain" not in sys.modules
try:
    lmx.data.make_train_iterator
except ModuleNotFoundError as exc:
    print("training input needs grain:", exc.name)
"""


def test_tokenizers_and_decoding_import_without_grain():
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "training input needs grain: grain" in out.stdout
