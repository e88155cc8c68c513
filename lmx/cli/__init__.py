"""The `lmx` command line (console script `lmx = "lmx.cli:main"`; also `python -m lmx.cli`).

app.py builds the parser, dispatches and turns errors into one line on stderr (exit 2); each verb
has its module (train, eval, info, generate, tokenizer) that parses its arguments, calls the library
and prints.
"""

from lmx.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
