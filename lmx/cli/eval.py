"""`lmx eval`: a run's checkpoint on held-out data (lmx.api.evaluate_run)."""

from __future__ import annotations

import json

from lmx.errors import ConfigError


def add_parser(verbs) -> None:
    evaluate = verbs.add_parser("eval", help="evaluate a run's checkpoint on held-out data",
                                description="Validation loss, perplexity and bits per byte of a checkpoint.")
    evaluate.add_argument("--run", required=True, help="run directory")
    evaluate.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    evaluate.add_argument("--batches", type=int, default=None, help="validation batches (default: train.eval_batches)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--force-tokenizer", action="store_true",
                          help="evaluate even if the run's tokenizer fingerprint differs from the checkpoint's")
    evaluate.set_defaults(func=run)


def run(args) -> int:
    from lmx.api import evaluate_run, load

    if args.batches is not None and args.batches < 1:
        raise ConfigError(f"--batches: must be >= 1, got {args.batches}")

    loaded = load(args.run, step=args.step, force_tokenizer=args.force_tokenizer)
    result = evaluate_run(loaded, batches=args.batches)
    result = {"run": str(args.run), "step": loaded.step, **result}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.run} step {loaded.step}: loss {result['loss']:.4f}  perplexity {result['perplexity']:.2f}  "
              f"bits/byte {result['bits_per_byte']:.4f}  bits/char {result['bits_per_char']:.4f}  "
              f"({int(result['tokens'])} tokens)")
    return 0
