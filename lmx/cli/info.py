"""`lmx info`: parameter count, FLOPs per token and derived sizes of a config (lmx.api.config_info),
or with --sharding its layout over the mesh (lmx.parallel.report)."""

from __future__ import annotations

import json

from lmx.cli.options import add_config_args
from lmx.errors import ConfigError


def add_parser(verbs) -> None:
    info = verbs.add_parser("info", help="parameter count and FLOPs per token of a config",
                            description="Parameter count, FLOPs per token and derived sizes of a config.")
    add_config_args(info)
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument("--sharding", action="store_true",
                      help="per-parameter shape, logical axes, PartitionSpec and bytes per device for the "
                           "config's mesh.shape and mesh.strategy (abstract mesh: no devices needed)")
    info.add_argument("--devices", type=int, default=None,
                      help="with --sharding: device count that sizes a -1 mesh axis (default: this machine's)")
    info.set_defaults(func=run)


def run(args) -> int:
    from lmx.config import load_config

    if args.devices is not None and args.devices < 1:
        raise ConfigError(f"--devices: must be >= 1, got {args.devices}")
    config = load_config(args.config, args.overrides)
    if args.sharding:
        from lmx.parallel.report import format_report
        from lmx.train.state import sharding_report

        report = sharding_report(config, n_devices=args.devices)
        print(json.dumps(report) if args.json else format_report(report))
        return 0
    from lmx.api import config_info

    info = config_info(config)
    if args.json:
        print(json.dumps(info))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            shown = f"{value:,}" if isinstance(value, int) else f"{value:.4g}" if isinstance(value, float) else value
            print(f"{key:<{width}}  {shown}")
    return 0
