"""The `lmx` command. Verbs: train, eval, generate, info, tokenizer. Errors print one line on stderr and exit with 2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lmx.errors import LmxError

EXIT_USAGE = 2


def _add_config_args(parser: argparse.ArgumentParser, default: str | None = "default") -> None:
    parser.add_argument("--config", default=default,
                        help="config name in configs/ (default, tiny, ...) or a path to a .py config file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set model.d_model=128 (repeatable)")


def _cmd_train(args) -> int:
    from lmx.config import load_config
    from lmx.train.loop import train
    from lmx.train.run_dir import read_run_config

    if args.resume and args.config is None:
        if not args.run_dir:
            raise LmxError("--resume: name the run to continue with --run-dir DIR")
        config = read_run_config(Path(args.run_dir)).with_overrides(args.overrides)
    else:
        config = load_config(args.config or "default", args.overrides)
    summary = train(config, run_dir=args.run_dir, resume=args.resume, force=args.force,
                    show_progress=not args.quiet, force_tokenizer=args.force_tokenizer)
    _print_summary(summary)
    return 0


def _print_summary(summary: dict) -> None:
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


def _cmd_eval(args) -> int:
    import jax

    from lmx.api import config_for_these_devices, load
    from lmx.data import prepare_data
    from lmx.eval import evaluate
    from lmx.train.loop import build_trainer, to_global

    run = load(args.run, step=args.step, force_tokenizer=args.force_tokenizer)
    config = config_for_these_devices(run.config)
    data = prepare_data(config, tokenizer=run.tokenizer)
    trainer = build_trainer(config, run.tokenizer.token_bytes, token_chars=run.tokenizer.token_chars)
    from flax import nnx

    params = jax.device_put(nnx.state(run.model), trainer.state_shardings["params"])
    batches = [to_global(b, trainer.batch_sharding)
               for b in data.valid_batches(args.batches or config.train.eval_batches,
                                           jax.process_index(), jax.process_count())]
    result = evaluate(trainer.eval_step, params, batches)
    result = {"run": str(args.run), "step": run.step, **result}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.run} step {run.step}: loss {result['loss']:.4f}  perplexity {result['perplexity']:.2f}  "
              f"bits/byte {result['bits_per_byte']:.4f}  bits/char {result['bits_per_char']:.4f}  "
              f"({int(result['tokens'])} tokens)")
    return 0


def _cmd_info(args) -> int:
    from lmx.config import load_config
    from lmx.nn import flops_per_token, param_count

    config = load_config(args.config, args.overrides)
    if args.sharding:
        from lmx.parallel.report import format_report
        from lmx.train.state import sharding_report

        report = sharding_report(config, n_devices=args.devices)
        print(json.dumps(report) if args.json else format_report(report))
        return 0
    model = config.model
    flops = flops_per_token(model, config.data.seq_len)
    info = {
        "config": config.name,
        "params": param_count(model),
        "params_non_embedding": param_count(model, include_embedding=False),
        "flops_per_token_forward": flops["forward"],
        "flops_per_token_training": flops["training"],
        "d_model": model.d_model,
        "n_layers": model.n_layers,
        "n_heads": model.n_heads,
        "n_kv_heads": model.n_kv_heads,
        "head_dim": model.resolved_head_dim,
        "d_ff": model.resolved_d_ff,
        "vocab_size": model.vocab_size,
        "seq_len": config.data.seq_len,
        "tokens_per_step": config.data.batch_size * config.data.seq_len,
    }
    from lmx.parallel.report import attention_kernel

    info["attention_kernel"] = attention_kernel(config)  # what model.attention_impl runs on this machine
    if args.json:
        print(json.dumps(info))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            shown = f"{value:,}" if isinstance(value, int) else f"{value:.4g}" if isinstance(value, float) else value
            print(f"{key:<{width}}  {shown}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmx", description="Language-model scaling experiments in JAX/Flax.")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    train = verbs.add_parser("train", help="train a model (default: configs/default.py on the stdlib corpus)",
                             description="Train a model; writes a run directory (config, tokenizer, "
                                         "checkpoints, metrics.jsonl, events/, summary.json).")
    _add_config_args(train, default=None)
    train.add_argument("--run-dir", help="run directory (default: train.run_dir or runs/<name>-<timestamp>)")
    train.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its newest checkpoint")
    train.add_argument("--force", action="store_true",
                       help="overwrite a run directory that holds another run or this one")
    train.add_argument("--force-tokenizer", action="store_true",
                       help="resume even if the tokenizer fingerprint differs from the checkpoint's")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=_cmd_train)

    evaluate = verbs.add_parser("eval", help="evaluate a run's checkpoint on held-out data",
                                description="Validation loss, perplexity and bits per byte of a checkpoint.")
    evaluate.add_argument("--run", required=True, help="run directory")
    evaluate.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    evaluate.add_argument("--batches", type=int, default=None, help="validation batches (default: train.eval_batches)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--force-tokenizer", action="store_true",
                          help="evaluate even if the run's tokenizer fingerprint differs from the checkpoint's")
    evaluate.set_defaults(func=_cmd_eval)

    info = verbs.add_parser("info", help="parameter count and FLOPs per token of a config",
                            description="Parameter count, FLOPs per token and derived sizes of a config.")
    _add_config_args(info)
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument("--sharding", action="store_true",
                      help="per-parameter shape, logical axes, PartitionSpec and bytes per device for the "
                           "config's mesh.shape and mesh.strategy (abstract mesh: no devices needed)")
    info.add_argument("--devices", type=int, default=None,
                      help="with --sharding: device count that sizes a -1 mesh axis (default: this machine's)")
    info.set_defaults(func=_cmd_info)
    from lmx.generate_cli import add_generate_parser
    from lmx.tokenizer_cli import add_tokenizer_parser
    add_generate_parser(verbs)
    add_tokenizer_parser(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.verb in ("train", "eval"):  # multi-process runs: start jax.distributed before any device use
            from lmx.parallel.distributed import initialize_from_env

            initialize_from_env()
        return args.func(args)
    except LmxError as exc:
        message = " ".join(str(exc).split())
        print(f"lmx {args.verb}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"lmx {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
