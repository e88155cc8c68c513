"""Tokenizer training time, encode/decode throughput and compression for every trained kind.

    python benchmarks/tokenizer_encode.py [--vocab 4096] [--train-bytes 2000000] [--sample-bytes 1000000]

Trains each kind on the first --train-bytes of the stdlib corpus's training split, then encodes
(encode_batch, per document) and decodes the first --sample-bytes of the validation split.
Writes benchmarks/results/tokenizer_encode.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KINDS = ("bytes", "byte_bpe", "bpe", "wordpiece", "unigram")


def best_of(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--train-bytes", type=int, default=2_000_000)
    parser.add_argument("--sample-bytes", type=int, default=1_000_000)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tokenizer_encode.json"))
    args = parser.parse_args(argv)

    from lmx.data import load_corpus, split_corpus
    from lmx.tokenizers import take_bytes, train_tokenizer

    split = split_corpus(load_corpus("stdlib"), 0.02)
    train_texts = [d.text for d in split.train]
    sample = list(take_bytes((d.text for d in split.valid), args.sample_bytes))
    n_bytes = sum(len(t.encode("utf-8")) for t in sample)
    rows = []
    for kind in KINDS:
        t0 = time.perf_counter()
        tok = train_tokenizer(kind, train_texts, args.vocab, args.train_bytes)
        train_s = time.perf_counter() - t0
        encoded = tok.encode_batch(sample)
        n_tokens = sum(map(len, encoded))
        enc_s = best_of(lambda tok=tok: tok.encode_batch(sample))
        dec_s = best_of(lambda tok=tok, encoded=encoded: [tok.decode(ids) for ids in encoded])
        assert [tok.decode(ids) for ids in encoded] == sample, f"{kind} does not round-trip"
        rows.append({
            "kind": kind, "vocab_size": tok.vocab_size, "train_seconds": round(train_s, 2),
            "tokens_per_byte": round(n_tokens / n_bytes, 4),
            "encode_mb_per_s": round(n_bytes / enc_s / 1e6, 2), "decode_mb_per_s": round(n_bytes / dec_s / 1e6, 2),
        })
        print(rows[-1], flush=True)
    result = {"vocab": args.vocab, "train_bytes": args.train_bytes, "sample_bytes": n_bytes,
              "python": platform.python_version(), "machine": platform.machine(), "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print("| kind | ids | train s | tokens/byte | encode MB/s | decode MB/s |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['kind']} | {r['vocab_size']} | {r['train_seconds']} | {r['tokens_per_byte']} "
              f"| {r['encode_mb_per_s']} | {r['decode_mb_per_s']} |")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
