"""The documentation stays true: docs/config.md is generated from the config tree, every CLI verb is in the
README, and every `lmx VERB --flag` the README shows exists. (tests/test_doc_examples.py runs the Python
examples.)"""

import argparse
import re
import shlex
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


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})


def _readme_commands() -> list[tuple[int, list[str]]]:
    """(line, words) of every `lmx ...` command in the README: the lines of its ```bash blocks (with
    `\\` continuations joined and comments dropped) and its inline code spans that start with `lmx `."""
    lines = (ROOT / "README.md").read_text().splitlines()
    commands, in_bash, pending, start = [], False, "", 0
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            in_bash = line.strip() == "```bash"
            continue
        if in_bash:
            if not pending:
                start = number
            pending += line.rstrip().removesuffix("\\") + " "
            if not line.rstrip().endswith("\\"):
                words = shlex.split(pending, comments=True)
                if "lmx" in words:
                    commands.append((start, words[words.index("lmx"):]))
                pending = ""
        else:
            for span in re.findall(r"`(lmx [^`]+)`", line):
                commands.append((number, span.replace("\\|", "|").split()))
    return commands


def test_every_readme_cli_flag_exists():
    """Every `lmx VERB [SUBVERB] --flag` of the README's command examples and command table is an option
    of that (sub)command in lmx.cli.build_parser."""
    verbs = _subparsers(build_parser())
    commands = _readme_commands()
    assert len(commands) >= 10, commands  # the README's bash blocks and command table were found
    problems = []
    for line, words in commands:
        if len(words) >= 2 and words[1] == "VERB":  # `lmx VERB --help`: every verb has --help
            words = ["lmx", *sorted(verbs)[:1], *words[2:]]
        if len(words) < 2 or words[1] not in verbs:
            problems.append(f"README.md:{line}: unknown verb in {' '.join(words)!r}")
            continue
        parser, name = verbs[words[1]], f"lmx {words[1]}"
        sub = _subparsers(parser)
        if sub:
            if len(words) < 3 or words[2] not in sub:
                problems.append(f"README.md:{line}: {name} needs one of {sorted(sub)}: {' '.join(words)!r}")
                continue
            parser, name = sub[words[2]], f"{name} {words[2]}"
        options = {s for a in parser._actions for s in a.option_strings}
        for flag in re.findall(r"(?<![\\w-])(--[a-z][a-z0-9-]*)", " ".join(words)):
            if flag not in options:
                problems.append(f"README.md:{line}: {name} has no option {flag}")
    assert not problems, "\n".join(problems)
