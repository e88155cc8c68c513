"""The documentation stays true: every config key is documented, every CLI verb is in the README."""

from pathlib import Path

from lmx.cli import build_parser
from lmx.config import leaf_keys

ROOT = Path(__file__).resolve().parent.parent


def test_every_config_key_is_documented():
    text = (ROOT / "docs" / "config.md").read_text()
    missing = [key for key in leaf_keys() if f"`{key}`" not in text]
    assert not missing, f"docs/config.md lacks {missing}"


def test_every_cli_verb_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    parser = build_parser()
    verbs = next(a for a in parser._actions if a.dest == "verb").choices
    missing = [verb for verb in verbs if f"lmx {verb}" not in readme]
    assert not missing, f"README lacks {missing}"
    assert "make run" in readme and "make test" in readme
