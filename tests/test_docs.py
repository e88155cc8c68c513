"""The documentation stays true: docs/config.md is generated from the config tree, every CLI verb is in the
README."""

from pathlib import Path

from lmx.cli import build_parser
from lmx.config import leaf_keys
from lmx.config_docs import COMMAND, render

ROOT = Path(__file__).resolve().parent.parent


def test_every_config_key_is_documented():
    text = render()
    missing = [key for key in leaf_keys() if f"| `{key}` |" not in text]
    assert not missing, f"the generated docs/config.md lacks {missing}"


def test_config_docs_are_generated_from_the_config_tree():
    assert (ROOT / "docs" / "config.md").read_text() == render(), \
        f"docs/config.md is out of date with lmx/config.py (or the registries): regenerate it with {COMMAND}"


def test_every_cli_verb_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    parser = build_parser()
    verbs = next(a for a in parser._actions if a.dest == "verb").choices
    missing = [verb for verb in verbs if f"lmx {verb}" not in readme]
    assert not missing, f"README lacks {missing}"
    assert "make run" in readme and "make test" in readme
