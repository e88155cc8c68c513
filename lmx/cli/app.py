"""The `lmx` command: the argument parser, dispatch to the verb modules, and error handling.

Errors (LmxError) print one line on stderr and exit with 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from lmx.cli import compare, generate, info, sweep, tokenizer, train
from lmx.cli import eval as eval_verb
from lmx.errors import LmxError
from lmx.parallel.distributed import initialize_from_env
from lmx.train.checkpoint import CheckpointNotice

EXIT_USAGE = 2
VERBS = (train, eval_verb, info, generate, tokenizer, sweep, compare)  # each adds its parser and sets args.func


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmx", description="Language-model scaling experiments in JAX/Flax.")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True
    for verb in VERBS:
        verb.add_parser(verbs)
    return parser


def _one_line_notices(verb: str, default):
    """A `warnings.showwarning` that prints lmx's own notices (lmx.train.checkpoint.CheckpointNotice: a
    damaged checkpoint passed over, one without checksums) as one line, like errors; other warnings go
    to `default`."""
    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, CheckpointNotice):
            print(f"lmx {verb}: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
        else:
            default(message, category, filename, lineno, file, line)

    return show


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    default_show = warnings.showwarning
    warnings.showwarning = _one_line_notices(args.verb, default_show)
    try:
        return _run(args)
    finally:
        warnings.showwarning = default_show


def _run(args) -> int:
    try:
        if args.verb in ("train", "eval"):  # multi-process runs: start jax.distributed before any device use
            initialize_from_env()
        return args.func(args)
    except LmxError as exc:
        message = " ".join(str(exc).split())
        print(f"lmx {args.verb}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"lmx {args.verb}: interrupted", file=sys.stderr)
        return 130
