"""`lmx generate --run DIR --prompt TEXT [options]`: sample, search or speculate from a checkpoint (lmx.decode).

One prompt and one sample stream their text as it is produced; otherwise each completion is printed
under a header (or, with --json, one JSON object per line).
"""

from __future__ import annotations

import json
import sys

from lmx.api import load
from lmx.decode import SamplingConfig, best_of_n, generate
from lmx.decode.stopping import validate_stops
from lmx.errors import ConfigError

SAMPLING_FLAGS = {  # flag dest -> SamplingConfig field (None by default: only what the user sets is passed)
    "temperature": float, "top_k": int, "top_p": float, "min_p": float, "repetition_penalty": float,
    "presence_penalty": float, "frequency_penalty": float, "no_repeat_ngram": int,
}


def add_parser(verbs) -> None:
    p = verbs.add_parser("generate", help="generate text from a run's checkpoint (KV-cached, streamed)",
                         description="Continue prompts with a trained model: sampling (temperature, top-k, "
                                     "top-p, min-p, penalties), greedy, beam search, best-of-N or "
                                     "speculative decoding with a draft run.")
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    p.add_argument("--prompt", action="append", default=[], help="prompt text (repeatable)")
    p.add_argument("--prompt-file", action="append", default=[], help="a file whose whole text is one prompt")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--greedy", action="store_true", help="argmax decoding (temperature 0)")
    for dest, kind in SAMPLING_FLAGS.items():
        p.add_argument("--" + dest.replace("_", "-"), dest=dest, type=kind, default=None)
    p.add_argument("--stop", action="append", default=[], help="stop string, matched on the text (repeatable)")
    p.add_argument("--num-samples", type=int, default=1, help="samples per prompt (beam search: hypotheses)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--beams", type=int, default=1, help="beam width (> 1: beam search)")
    p.add_argument("--length-penalty", type=float, default=1.0, help="beam score = logprob / length^this")
    p.add_argument("--no-early-stopping", action="store_true",
                   help="beam search: stop when no live beam can win instead of at `beams` finished ones")
    p.add_argument("--best-of", type=int, default=None,
                   help="draw N samples per prompt and print the one with the best mean log-probability")
    p.add_argument("--draft-run", default=None, help="a smaller run with the same tokenizer: speculative decoding")
    p.add_argument("--draft-step", type=int, default=None)
    p.add_argument("--draft-tokens", type=int, default=4, help="tokens the draft proposes per round")
    p.add_argument("--context-len", type=int, default=None, help="longest prompt + output (default: model.max_seq_len)")
    p.add_argument("--truncate-prompt", action="store_true", help="keep the end of a prompt longer than the context")
    p.add_argument("--json", action="store_true", help="one JSON object per completion")
    p.add_argument("--force-tokenizer", action="store_true", help="skip the tokenizer fingerprint check")
    p.set_defaults(func=run)


def _prompts(args) -> list[str]:
    prompts = list(args.prompt)
    for path in args.prompt_file:
        try:
            with open(path, encoding="utf-8") as handle:
                prompts.append(handle.read())
        except OSError as exc:
            raise ConfigError(f"--prompt-file: cannot read {path}: {exc.strerror}") from None
    if not prompts:
        raise ConfigError("give at least one --prompt TEXT (or --prompt-file FILE)")
    return prompts


def _options(args) -> dict:
    options = {dest: getattr(args, dest) for dest in SAMPLING_FLAGS if getattr(args, dest) is not None}
    if options.get("top_k", 1) < 1:
        raise ConfigError(f"--top-k must be >= 1, got {options['top_k']} (leave it out to keep every token)")
    if args.greedy:
        if options.get("temperature", 0.0) != 0.0:
            raise ConfigError("--greedy and --temperature contradict each other; give one")
        options["temperature"] = 0.0
    return options


def run(args) -> int:
    prompts = _prompts(args)
    if args.best_of is not None and (args.best_of < 1 or args.beams != 1 or args.num_samples != 1):
        raise ConfigError("--best-of N needs N >= 1 and no --beams or --num-samples")
    options = _options(args)
    if args.beams == 1:
        SamplingConfig(**options)  # bad values fail here, before anything is loaded or printed
    validate_stops(args.stop)
    run = load(args.run, args.step, force_tokenizer=args.force_tokenizer)
    common = dict(max_new_tokens=args.max_new_tokens, seed=args.seed, stop=args.stop, context_len=args.context_len,
                  truncate=args.truncate_prompt)
    if args.draft_run:
        draft = load(args.draft_run, args.draft_step, force_tokenizer=args.force_tokenizer)
        common.update(draft=draft.model, draft_tokenizer=draft.tokenizer, draft_tokens=args.draft_tokens)
    if args.best_of is not None:
        results = []
        for prompt in prompts:
            best, _ = best_of_n(run.model, run.tokenizer, prompt, args.best_of, **common, **options)
            results.append(best)
        _print(results, args)
        return 0
    stream = (len(prompts) == 1 and args.num_samples == 1 and args.beams == 1 and not args.json
              and not args.draft_run)
    if stream:
        shown = []  # the prompt is printed with the first text, so an error leaves stdout empty

        def on_text(row, text):
            sys.stdout.write(("" if shown else prompts[0]) + text)
            sys.stdout.flush()
            shown.append(True)

        completion = generate(run.model, run.tokenizer, prompts, on_text=on_text, **common, **options)[0]
        if not shown:
            sys.stdout.write(prompts[0] + completion.text)
        sys.stdout.write(f"\n[{completion.finish_reason}, {len(completion.tokens)} tokens, "
                         f"mean logprob {completion.mean_logprob:.3f}]\n")
        return 0
    results = generate(run.model, run.tokenizer, prompts, num_samples=args.num_samples, beams=args.beams,
                       length_penalty=args.length_penalty, early_stopping=not args.no_early_stopping,
                       **common, **options)
    _print(results, args)
    return 0


def _print(completions, args) -> None:
    for i, c in enumerate(completions):
        record = {"prompt": c.prompt, "text": c.text, "finish_reason": c.finish_reason, "tokens": len(c.tokens),
                  "logprob": c.logprob, "mean_logprob": c.mean_logprob, "stop_string": c.stop_string,
                  "score": c.score}
        if args.json:
            print(json.dumps(record))
            continue
        score = "" if c.score is None else f", score {c.score:.3f}"
        print(f"--- completion {i + 1} [{c.finish_reason}, {len(c.tokens)} tokens, "
              f"mean logprob {c.mean_logprob:.3f}{score}]")
        print(c.prompt + c.text)
    sys.stdout.flush()
