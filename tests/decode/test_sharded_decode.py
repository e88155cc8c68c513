"""Decoding a model whose parameters are sharded over 8 forced host devices (FSDP, tensor parallel)
gives the same tokens and log-probabilities as on one device (subprocess: the device count is fixed
when jax starts)."""

import json
import subprocess
import sys
import textwrap

from tests.parallel.conftest import ROOT, subprocess_env

SCRIPT = textwrap.dedent("""
    import json, jax, numpy as np
    from flax import nnx
    from lmx.config import MeshConfig, ModelConfig
    from lmx.decode import SamplingConfig, beam_search, generate_tokens
    from lmx.nn import build_model
    from lmx.parallel.mesh import make_mesh
    from lmx.parallel.rules import STRATEGIES
    from lmx.parallel.shardings import tree_shardings

    config = ModelConfig(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, vocab_size=64, max_seq_len=32,
                         init_std=0.3)
    prompts = [[1, 2, 3, 4, 5], [7, 8]]
    sampling = SamplingConfig(temperature=0.9, top_k=20)

    def run(model):
        greedy = generate_tokens(model, prompts, max_new_tokens=8)
        sampled = generate_tokens(model, prompts, max_new_tokens=8, sampling=sampling, seed=3)
        beams = beam_search(model, prompts, beams=3, max_new_tokens=5)
        return {"greedy": greedy.tokens, "logprobs": greedy.logprobs, "sampled": sampled.tokens,
                "beams": [[h.tokens for h in hyps] for hyps in beams]}

    single = run(build_model(config, rngs=nnx.Rngs(0)))
    results = {}
    for strategy, shape in (("fsdp", {"fsdp": 8}), ("tp", {"data": 4, "tensor": 2})):
        mesh = make_mesh(MeshConfig(shape=shape), devices=jax.devices())
        model = build_model(config, rngs=nnx.Rngs(0))
        graphdef, state = nnx.split(model)
        state = jax.device_put(state, tree_shardings(state, mesh, STRATEGIES[strategy]))
        results[strategy] = run(nnx.merge(graphdef, state))
    print(json.dumps({"devices": jax.device_count(), "single": single, **results}))
""")


def test_sharded_parameters_decode_like_one_device():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=subprocess_env(8), cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 8
    for strategy in ("fsdp", "tp"):
        got, want = out[strategy], out["single"]
        assert got["greedy"] == want["greedy"], strategy
        assert got["sampled"] == want["sampled"], strategy
        assert got["beams"] == want["beams"], strategy
        for a, b in zip(got["logprobs"], want["logprobs"]):
            assert abs(a - b) <= 1e-4 * max(1.0, abs(b)), (strategy, a, b)
