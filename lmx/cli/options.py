"""Arguments shared by several verbs."""

from __future__ import annotations

import argparse


def add_config_args(parser: argparse.ArgumentParser, default: str | None = "default") -> None:
    parser.add_argument("--config", default=default,
                        help="config name in configs/ (default, tiny, ...) or a path to a .py config file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set model.d_model=128 (repeatable)")
