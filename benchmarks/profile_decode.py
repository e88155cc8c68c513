"""Where the time of one compiled decode step goes: a per-operation profile of lmx's decode loop.

    python benchmarks/profile_decode.py [--batch 8] [--new-tokens 256] [--size small] [--dtype float32]
                                        [--top 25]
                                        [--out benchmarks/results/decode_profile.json]

Runs `generate_tokens` (greedy) on the benchmark model of `generate_vs_hf.py` once to compile, then
once under `jax.profiler`, and reads the trace: every event of the decode loop's compiled module
(`_run_chunk`) carries the name of the HLO instruction it ran (a fusion, a dot, a scatter). The
optimized HLO of the same compilation maps each instruction to the JAX operation it came from (its
`op_name` metadata, e.g. `bkqh,bksh->bkqs/dot_general`), so the report gives milliseconds per decode
step by HLO instruction and by JAX operation. Times are thread time of each instruction as the
profiler saw it (it adds some overhead; the total is close to but above the unprofiled step).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import gzip
import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from generate_vs_hf import CONFIG, SIZES  # noqa: E402

from lmx.decode import engine  # noqa: E402
from lmx.decode.logits import SamplingConfig  # noqa: E402
from lmx.nn import build_model  # noqa: E402

_INSTRUCTION = re.compile(r"\s*(?:ROOT\s+)?%?([\w.\-]+) = (\S+) ([\w\-]+)\(")
_OP_NAME = re.compile(r'op_name="([^"]+)"')


def op_names(hlo_text: str) -> dict[str, tuple[str, str]]:
    """HLO instruction name -> (result shape, the JAX op_name without the jit/while prefixes, or
    '<opcode> <shape>' for instructions without that metadata)."""
    names = {}
    for line in hlo_text.splitlines():
        m = _INSTRUCTION.match(line)
        if m:
            op = _OP_NAME.search(line)
            label = re.sub(r"^jit\([^)]*\)/(while/body/)?", "", op.group(1)) if op else f"{m.group(3)} {m.group(2)}"
            names[m.group(1)] = (m.group(2), label)
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="model.param_dtype and compute_dtype, as generate_vs_hf.py --dtype")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/decode_profile.json"))
    args = parser.parse_args()

    config = dataclasses.replace(CONFIG, **SIZES[args.size], param_dtype=args.dtype, compute_dtype=args.dtype)
    model = build_model(config, rngs=nnx.Rngs(0))
    prompts = np.random.default_rng(0).integers(0, CONFIG.vocab_size, (args.batch, args.prompt_len)).tolist()
    greedy = SamplingConfig(temperature=0.0)
    run = lambda: engine.generate_tokens(model, prompts, max_new_tokens=args.new_tokens, sampling=greedy, eos_id=None)
    unprofiled = min(run().stats["decode_s"] for _ in range(3)) / args.new_tokens

    graphdef, params, state, _, _ = engine.start(model, prompts, max_new_tokens=args.new_tokens)
    hlo = engine._run_chunk.lower(graphdef, params, state, jnp.int32(args.new_tokens), sampling=greedy, eos_id=None,
                                  vocab_limit=None, streamed=False).compile().as_text()
    names = op_names(hlo)
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir)
        out = run()
        jax.profiler.stop_trace()
        trace = sorted(Path(trace_dir).rglob("*.trace.json.gz"))[-1]
        events = json.load(gzip.open(trace))["traceEvents"]
    steps = out.stats["new_tokens"]
    per_instruction, calls = collections.Counter(), collections.Counter()
    for e in events:
        a = e.get("args", {})
        if e.get("ph") == "X" and str(a.get("hlo_module", "")).endswith("_run_chunk") and "hlo_op" in a:
            per_instruction[a["hlo_op"]] += e["dur"] / 1e3 / steps
            calls[a["hlo_op"]] += 1
    per_op = collections.Counter()
    for name, ms in per_instruction.items():
        per_op[names.get(name, ("", name))[1] or name] += ms

    print(f"batch {args.batch}, size {args.size}, {args.dtype}: {unprofiled * 1e3:.3f} ms per decode step unprofiled; "
          f"{sum(per_instruction.values()):.3f} ms of instruction time per step under the profiler")
    print(f"{'ms/step':>8}  JAX operation")
    for op, ms in per_op.most_common(args.top):
        print(f"{ms:8.3f}  {op}")
    result = {
        "batch": args.batch, "size": args.size, "dtype": args.dtype, "new_tokens": args.new_tokens, "prompt_len": args.prompt_len,
        "decode_ms_per_step_unprofiled": unprofiled * 1e3,
        "instruction_ms_per_step_profiled": sum(per_instruction.values()),
        "by_jax_op_ms_per_step": dict(per_op.most_common()),
        "by_hlo_instruction": [{"name": n, "ms_per_step": ms, "shape": names.get(n, ("", ""))[0],
                                "op": names.get(n, ("", ""))[1], "calls": calls[n]}
                               for n, ms in per_instruction.most_common(args.top)],
        "jax": jax.__version__, "backend": jax.default_backend(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
