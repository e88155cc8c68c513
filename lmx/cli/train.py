"""`lmx train`: train a model (lmx.train.loop.train) and print its summary."""

from __future__ import annotations

from pathlib import Path

from lmx.cli.options import add_config_args
from lmx.errors import LmxError


def add_parser(verbs) -> None:
    train = verbs.add_parser("train", help="train a model (default: configs/default.py on the stdlib corpus)",
                             description="Train a model; writes a run directory (config, tokenizer, "
                                         "checkpoints, metrics.jsonl, events/, summary.json).")
    add_config_args(train, default=None)
    train.add_argument("--run-dir", help="run directory (default: train.run_dir or runs/<name>-<timestamp>)")
    train.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its newest checkpoint")
    train.add_argument("--force", action="store_true",
                       help="overwrite a run directory that holds another run or this one")
    train.add_argument("--force-tokenizer", action="store_true",
                       help="resume even if the tokenizer fingerprint differs from the checkpoint's")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=run)


def run(args) -> int:
    from lmx.config import load_config
    from lmx.train.loop import train
    from lmx.train.run_dir import read_run_config

    if args.resume and args.config is None:
        if not args.run_dir:
            raise LmxError("--resume: name the run to continue with --run-dir DIR")
        config = read_run_config(Path(args.run_dir), option="--run-dir").with_overrides(args.overrides)
    else:
        config = load_config(args.config or "default", args.overrides)
    summary = train(config, run_dir=args.run_dir, resume=args.resume, force=args.force,
                    show_progress=not args.quiet, force_tokenizer=args.force_tokenizer)
    print_summary(summary)
    return 0


def print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    title = "lmx train: summary" if summary["status"] == "completed" else f"lmx train: {summary['status']}"
    table = Table(title=title, show_header=False)
    rows = [
        ("parameters", f"{summary['params']:,} ({summary['params_non_embedding']:,} non-embedding)"),
        ("tokens seen", f"{summary['tokens_seen']:,}"),
        ("training FLOPs", f"{summary['train_flops']:.3e}"),
        ("validation loss", f"{summary['val_loss']:.4f} nats/token"),
        ("validation perplexity", f"{summary['val_perplexity']:.2f}"),
        ("validation bits per byte", f"{summary['val_bits_per_byte']:.4f}"),
        ("validation bits per char", f"{summary.get('val_bits_per_char', float('nan')):.4f}"),
        ("throughput", f"{summary['tokens_per_second']:,.0f} tokens/s" if summary["tokens_per_second"] else "-"),
        ("wall time", f"{summary['wall_seconds']:.1f} s"),
        ("run directory", summary["run_dir"]),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    for sample in summary["samples"]:
        console.print(f"[bold]greedy sample[/bold] {sample['prompt']!r} -> ", end="")
        console.print(repr(sample["prompt"] + sample["completion"]), markup=False, highlight=False)
