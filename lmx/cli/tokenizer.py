"""`lmx tokenizer train` and `lmx tokenizer inspect` (lmx.tokenizers; see docs/tokenizers.md)."""

from __future__ import annotations

import json
from pathlib import Path

from lmx.config import DataConfig
from lmx.data import stdlib_sample, training_texts
from lmx.errors import ConfigError, DataError
from lmx.registry import NORMALIZATIONS, TOKENIZERS
from lmx.tokenizers import load_any, text_stats, train_tokenizer

DEFAULT_SAMPLE_BYTES = 200_000


def add_parser(subparsers) -> None:
    """Register the `tokenizer` verb with sub-verbs `train` and `inspect` on the `lmx` subparsers."""
    parser = subparsers.add_parser("tokenizer", help="train or inspect a tokenizer",
                                   description="Train a tokenizer into a directory, or inspect one.")
    verbs = parser.add_subparsers(dest="tokenizer_verb", metavar="{train,inspect}")
    verbs.required = True

    train = verbs.add_parser("train", help="train a tokenizer and save it to --out",
                             description="Train a tokenizer on FILES (default: the embedded stdlib corpus's "
                                         "train split) and write tokenizer.json or bytes.json, kind.txt and "
                                         "fingerprint.txt into --out.")
    train.add_argument("--kind", required=True, choices=TOKENIZERS.names(), help="tokenizer kind")
    train.add_argument("--vocab-size", type=int, required=True, help="total ids, special tokens included")
    train.add_argument("--out", required=True, help="output directory")
    train.add_argument("files", nargs="*", metavar="FILES",
                       help="corpus files, directories or globs (default: the embedded stdlib corpus)")
    train.add_argument("--max-bytes", type=int, default=DataConfig.tokenizer_train_bytes,
                       help="train on at most this many bytes of text (default: %(default)s)")
    train.add_argument("--special-token", dest="special_tokens", action="append", default=[], metavar="TOKEN",
                       help="an extra special token after <|eos|> <|pad|> <|bos|>, e.g. '<|mask|>' (repeatable)")
    train.add_argument("--num-sentinels", type=int, default=0,
                       help="span-corruption sentinels <|sentinel_0|>... (default: 0)")
    train.add_argument("--normalization", choices=NORMALIZATIONS.names(), default="none",
                       help="unicode normalisation applied before tokenizing (default: none)")
    train.add_argument("--json", action="store_true", help="print one JSON object")
    train.set_defaults(func=_cmd_train)

    inspect = verbs.add_parser("inspect", help="show a tokenizer's pieces, ids and compression",
                               description="Pieces and ids of --text, and tokens per byte / char / word on "
                                           "--text or on a sample of the embedded corpus's validation split.")
    inspect.add_argument("tokenizer", metavar="DIR",
                         help="a directory written by `lmx tokenizer train` or a run's tokenizer/, or a "
                              "tokenizer file (.json, .model, .tiktoken)")
    inspect.add_argument("--text", help="text to tokenize (default: a sample of the stdlib corpus)")
    inspect.add_argument("--sample-bytes", type=int, default=DEFAULT_SAMPLE_BYTES,
                         help="size of the corpus sample when --text is not given (default: %(default)s)")
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.set_defaults(func=_cmd_inspect)


def _cmd_train(args) -> int:
    if args.max_bytes < 0:
        raise ConfigError(f"--max-bytes: must be >= 0, got {args.max_bytes}")
    if args.num_sentinels < 0:
        raise ConfigError(f"--num-sentinels: must be >= 0, got {args.num_sentinels}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: {out} exists and is not a directory (the tokenizer is written into a directory)")
    counted = {"bytes": 0, "docs": 0}

    def counting(texts):
        for text in texts:
            counted["bytes"] += len(text.encode("utf-8"))
            counted["docs"] += 1
            yield text

    texts = counting(training_texts(args.files, args.max_bytes))
    tok = train_tokenizer(args.kind, texts, args.vocab_size, 0, special_tokens=args.special_tokens,
                          num_sentinels=args.num_sentinels, normalization=args.normalization)
    try:
        out = tok.save(out)
    except OSError as exc:
        raise ConfigError(f"--out: cannot write {out}: {exc.strerror or exc}") from None
    info = {
        "out": str(out),
        "kind": tok.kind,
        "vocab_size": tok.vocab_size,
        "fingerprint": tok.fingerprint,
        "special_tokens": tok.special_ids,
        "trained_on_bytes": counted["bytes"],
        "trained_on_documents": counted["docs"],
    }
    if args.json:
        print(json.dumps(info))
    else:
        print(f"trained {tok.kind} tokenizer: {tok.vocab_size} ids on {counted['bytes']:,} bytes "
              f"({counted['docs']:,} documents)")
        print(f"saved to {out}  (fingerprint {tok.fingerprint[:16]})")
        print("special tokens: " + "  ".join(f"{t}={i}" for t, i in tok.special_ids.items()))
    return 0


def _cmd_inspect(args) -> int:
    if not Path(args.tokenizer).expanduser().exists():
        raise DataError(f"{args.tokenizer}: does not exist (give a directory written by `lmx tokenizer train`, a "
                        "run's tokenizer/, or a .json, .model or .tiktoken file)")
    tok = load_any(args.tokenizer)
    source = "--text" if args.text is not None else f"stdlib validation sample ({args.sample_bytes:,} bytes)"
    text = args.text if args.text is not None else stdlib_sample(args.sample_bytes)
    stats = text_stats(tok, text)
    ids = stats.pop("ids")
    info = {
        "tokenizer": args.tokenizer,
        "kind": tok.kind,
        "vocab_size": tok.vocab_size,
        "fingerprint": tok.fingerprint,
        "special_tokens": tok.special_ids,
        "text": source,
        **stats,
    }
    if args.text is not None:
        info["ids"] = ids
        info["pieces"] = [tok.piece(i) for i in ids]
    if args.json:
        print(json.dumps(info, ensure_ascii=False))
        return 0
    print(f"{args.tokenizer}: {tok.kind}, {tok.vocab_size} ids, fingerprint {tok.fingerprint[:16]}")
    print("special tokens: " + "  ".join(f"{t}={i}" for t, i in tok.special_ids.items()))
    if args.text is not None:
        print("pieces: " + " ".join(repr(p) for p in info["pieces"]))
        print("ids:    " + " ".join(str(i) for i in ids))
    print(f"{source}: {stats['tokens']:,} tokens, {stats['bytes']:,} bytes, {stats['chars']:,} chars, "
          f"{stats['words']:,} words")
    print(f"tokens/byte {stats['tokens_per_byte']:.4f}  tokens/char {stats['tokens_per_char']:.4f}  "
          f"tokens/word {stats['tokens_per_word']:.4f}  round trip {'yes' if stats['round_trip'] else 'no'}")
    return 0
