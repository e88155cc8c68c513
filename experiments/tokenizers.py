"""Tokenizer study: vocabulary size and kind at a fixed compute budget on the embedded stdlib corpus.

For each (kind, vocabulary size) it trains the same small Transformer (only the embedding and
output layer change with the vocabulary) for the number of steps that spends the same training FLOPs
as `--steps` steps of the reference (byte_bpe, 4096), then compares validation bits per byte and per
character, tokens per byte, tokenizer encode speed and training throughput (tokens/s and bytes/s).

    python experiments/tokenizers.py                 # the full grid (~10 minutes on 2 idle CPU cores)
    python experiments/tokenizers.py --steps 150     # the budget of docs/tokenizers.md (~15-25 minutes)
    python experiments/tokenizers.py --quick         # 2 tiny runs, under a minute (used by the tests)

Writes experiments/results/tokenizers.{json,md,png} (or under --out).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# This file is named like the `tokenizers` package: drop its directory from the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GRID = [
    ("bytes", 259),
    ("byte_bpe", 512), ("byte_bpe", 1024), ("byte_bpe", 4096), ("byte_bpe", 16384),
    ("bpe", 512), ("bpe", 1024), ("bpe", 4096), ("bpe", 16384),
    ("wordpiece", 1024), ("wordpiece", 4096),
    ("unigram", 1024), ("unigram", 4096),
]
QUICK_GRID = [("bytes", 259), ("byte_bpe", 320)]
REFERENCE = ("byte_bpe", 4096)

# A small model: d_model 64, 2 layers, context 128, batch 16 (2,048 tokens per step).
BASE = {
    "model.d_model": 64, "model.n_layers": 2, "model.n_heads": 4, "model.n_kv_heads": 2,
    "model.max_seq_len": 128, "data.seq_len": 128, "data.batch_size": 16,
    "data.max_corpus_bytes": 4_000_000, "data.tokenizer_train_bytes": 2_000_000,
    "optim.lr": 3e-3, "optim.warmup_steps": 10,
    "train.eval_batches": 8, "train.checkpoint_every": 1_000_000, "train.log_every": 50,
    "train.async_checkpointing": False, "eval.sample_tokens": 0,
}
QUICK = {
    "model.d_model": 16, "model.n_layers": 1, "model.n_heads": 2, "model.n_kv_heads": 1,
    "model.max_seq_len": 32, "data.seq_len": 32, "data.batch_size": 4,
    "data.max_corpus_bytes": 150_000, "data.tokenizer_train_bytes": 60_000,
    "train.eval_batches": 2, "train.checkpoint_every": 1_000_000, "train.log_every": 1,
    "train.async_checkpointing": False, "eval.sample_tokens": 0,
}


def config_for(kind: str, vocab: int, steps: int, overrides: dict, cache_dir: str):
    from lmx.config import load_config

    return load_config("tiny").replace(**{
        **overrides,
        "name": f"tok-{kind}-{vocab}",
        "data.tokenizer": kind,
        "model.vocab_size": vocab,
        "train.steps": steps,
        "train.eval_every": steps,
        "data.cache_dir": cache_dir,
    })


def steps_for_budget(config, budget_flops: float) -> int:
    from lmx.nn import flops_per_token

    per_step = flops_per_token(config.model, config.data.seq_len)["training"] * config.data.batch_size * config.data.seq_len
    return max(1, round(budget_flops / per_step))


def encode_speed(tokenizer, texts: list[str]) -> float:
    """Bytes per second of `encode_batch` over `texts` (best of 2)."""
    n = sum(len(t.encode("utf-8")) for t in texts)
    best = math.inf
    for _ in range(2):
        t0 = time.perf_counter()
        tokenizer.encode_batch(texts)
        best = min(best, time.perf_counter() - t0)
    return n / best


def run_one(kind: str, vocab: int, steps: int, overrides: dict, cache_dir: str, run_root: Path) -> dict:
    from lmx.data import prepare_data
    from lmx.train.loop import train

    config = config_for(kind, vocab, steps, overrides, cache_dir)
    data = prepare_data(config)
    tok = data.tokenizer
    stats = data.stats
    valid_text_tokens = stats["valid_tokens"] - stats["valid_docs"]  # without the EOS after each document
    tokens_per_byte = valid_text_tokens / stats["valid_bytes"]
    sample = [d.text for d in _valid_docs(config)][:200]
    speed = encode_speed(tok, sample)
    summary = train(config, run_dir=run_root / config.name, force=True, show_progress=False)
    tps = summary["tokens_per_second"] or float("nan")
    return {
        "kind": kind,
        "vocab_size": vocab,
        "tokenizer_vocab": tok.vocab_size,
        "steps": steps,
        "params": summary["params"],
        "params_non_embedding": summary["params_non_embedding"],
        "train_flops": summary["train_flops"],
        "tokens_seen": summary["tokens_seen"],
        "bytes_seen": summary["tokens_seen"] / tokens_per_byte,
        "tokens_per_byte": tokens_per_byte,
        "val_loss": summary["val_loss"],
        "val_bits_per_byte": summary["val_bits_per_byte"],
        "val_bits_per_char": summary.get("val_bits_per_char", float("nan")),
        "train_tokens_per_second": tps,
        "train_bytes_per_second": tps / tokens_per_byte,
        "encode_mb_per_second": speed / 1e6,
        "wall_seconds": summary["wall_seconds"],
        "tokenizer_fingerprint": tok.fingerprint,
    }


def _valid_docs(config):
    from lmx.data import load_corpus, split_corpus

    return split_corpus(load_corpus(config.data.corpus, config.data.max_corpus_bytes), config.data.valid_fraction).valid


def markdown_table(rows: list[dict]) -> str:
    head = ("| kind | vocab | steps | params | train FLOPs | tokens/byte | bytes seen (M) | val loss (nats/token) "
            "| **val bits/byte** | val bits/char | train tokens/s | train bytes/s | encode MB/s |")
    lines = [head, "|" + "|".join("---" for _ in range(13)) + "|"]
    for r in rows:
        lines.append(
            f"| {r['kind']} | {r['tokenizer_vocab']} | {r['steps']} | {r['params']:,} | {r['train_flops']:.2e} "
            f"| {r['tokens_per_byte']:.3f} | {r['bytes_seen'] / 1e6:.2f} | {r['val_loss']:.3f} "
            f"| **{r['val_bits_per_byte']:.3f}** | {r['val_bits_per_char']:.3f} | {r['train_tokens_per_second']:,.0f} "
            f"| {r['train_bytes_per_second']:,.0f} | {r['encode_mb_per_second']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    kinds = sorted({r["kind"] for r in rows}, key=[r["kind"] for r in rows].index)
    for kind in kinds:
        sub = sorted((r for r in rows if r["kind"] == kind), key=lambda r: r["tokenizer_vocab"])
        x = [r["tokenizer_vocab"] for r in sub]
        style = dict(marker="o", label=kind)
        axes[0].plot(x, [r["val_bits_per_byte"] for r in sub], **style)
        axes[1].plot(x, [r["tokens_per_byte"] for r in sub], **style)
        axes[2].plot(x, [r["train_bytes_per_second"] / 1e3 for r in sub], **style)
    titles = ("validation bits per byte (fixed FLOPs)", "tokens per byte", "training throughput (kB of text/s)")
    for ax, title in zip(axes, titles):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("vocabulary size")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100,
                        help="steps of the reference (byte_bpe, 4096) run; sets the FLOP budget (default: 100)")
    parser.add_argument("--quick", action="store_true", help="two tiny runs (bytes, byte_bpe 320) for tests")
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results"), help="output directory")
    parser.add_argument("--cache-dir", default="", help="lmx data cache (default: $LMX_CACHE or ~/.cache/lmx)")
    parser.add_argument("--only", default="", help="comma-separated kinds to run (default: all)")
    args = parser.parse_args(argv)

    grid, overrides = (QUICK_GRID, QUICK) if args.quick else (GRID, BASE)
    if args.only:
        grid = [g for g in grid if g[0] in args.only.split(",")]
    reference = QUICK_GRID[1] if args.quick else REFERENCE
    ref_config = config_for(*reference, args.steps, overrides, args.cache_dir)
    from lmx.nn import flops_per_token

    budget = (flops_per_token(ref_config.model, ref_config.data.seq_len)["training"]
              * ref_config.data.batch_size * ref_config.data.seq_len * args.steps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="lmx-tokenizer-study-") as run_root:
        for kind, vocab in grid:
            steps = steps_for_budget(config_for(kind, vocab, 1, overrides, args.cache_dir), budget)
            t0 = time.monotonic()
            row = run_one(kind, vocab, steps, overrides, args.cache_dir, Path(run_root))
            rows.append(row)
            print(f"{kind:>9} {row['tokenizer_vocab']:>6}: {steps:>4} steps  bits/byte {row['val_bits_per_byte']:.3f}  "
                  f"bits/char {row['val_bits_per_char']:.3f}  tokens/byte {row['tokens_per_byte']:.3f}  "
                  f"({time.monotonic() - t0:.0f} s)", flush=True)
    import jax

    result = {
        "budget_train_flops": budget,
        "reference": {"kind": reference[0], "vocab_size": reference[1], "steps": args.steps},
        "settings": {k: v for k, v in overrides.items()},
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "python": platform.python_version(),
        "rows": rows,
    }
    (out / "tokenizers.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    table = markdown_table(rows)
    (out / "tokenizers.md").write_text(
        f"Fixed budget: {budget:.3e} training FLOPs per run (= {args.steps} steps of {reference[0]} "
        f"{reference[1]}); backend {jax.default_backend()}.\n\n" + table, encoding="utf-8")
    figure(rows, out / "tokenizers.png")
    print(table)
    print(f"wrote {out / 'tokenizers.json'}, {out / 'tokenizers.md'}, {out / 'tokenizers.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
