"""Activation sharding constraints: present only inside an activation_sharding context."""

import json
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
from flax import nnx

from lmx.config import MeshConfig, ModelConfig
from lmx.nn import Transformer
from lmx.parallel import make_mesh
from lmx.parallel.activations import constrain, with_activation_sharding
from lmx.parallel.rules import STRATEGIES
from tests.parallel.conftest import ROOT, subprocess_env

CONFIG = ModelConfig(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, vocab_size=300, max_seq_len=16)


def _forward_hlo(wrap):
    graphdef, state = nnx.split(Transformer(CONFIG, rngs=nnx.Rngs(0)))
    fn = lambda state, tokens: nnx.merge(graphdef, state)(tokens)
    tokens = jnp.zeros((2, 8), jnp.int32)
    return jax.jit(wrap(fn)).lower(state, tokens).as_text()


def test_constrain_is_a_no_op_without_context():
    x = jnp.ones((2, 8, 32))
    assert constrain(x, ("batch", "seq", "embed")) is x
    assert _forward_hlo(lambda f: f).count("sharding_constraint") == 0


def test_block_boundaries_are_constrained_inside_the_context():
    mesh = make_mesh(MeshConfig(shape={"data": 1}))
    hlo = _forward_hlo(lambda f: with_activation_sharding(f, mesh, STRATEGIES["fsdp"]))
    assert hlo.count("sharding_constraint") >= 3  # after the embedding, in the scanned block body, after final norm


# Run with 8 forced host devices on a data=2 x fsdp=4 mesh under the fsdp rules (batch -> data, fsdp;
# embed -> fsdp): prints, per case, the lowered (StableHLO/Shardy) text of the constrained function and
# whether its values are unchanged. The constraint written into the program is what shows the drop:
# JAX accepts uneven constraints inside jit and trims them from the output's sharding itself.
_INDIVISIBLE_SCRIPT = """
import json
import jax, jax.numpy as jnp, numpy as np
from lmx.config import MeshConfig
from lmx.parallel import make_mesh
from lmx.parallel.activations import activation_sharding, constrain
from lmx.parallel.rules import STRATEGIES

mesh = make_mesh(MeshConfig(shape={"data": 2, "fsdp": 4}))
out = {"devices": jax.device_count(), "cases": []}
for shape, names in json.loads(%r):
    x = jnp.arange(int(np.prod(shape)), dtype=jnp.float32).reshape(shape)
    with activation_sharding(mesh, STRATEGIES["fsdp"]):
        fn = jax.jit(lambda x: constrain(x, tuple(names)))
        hlo, y = fn.lower(x).as_text(), fn(x)
    out["cases"].append({"hlo": hlo, "same_values": bool(np.array_equal(np.asarray(y), np.asarray(x)))})
print(json.dumps(out))
"""


def _constraint_axes(hlo: str) -> list[list[str]]:
    """The mesh axes of each dimension in the one `sdy.sharding_constraint` of a lowered program."""
    found = re.findall(r"sdy\.sharding_constraint %\S+ <@\w+, \[(.*?)\]>", hlo)
    assert len(found) == 1, hlo
    return [re.findall(r'"(\w+)"', dim) for dim in re.findall(r"\{([^}]*)\}", found[0])]


# (shape, logical names) -> the expected mesh axes per dimension: the longest prefix of the rule's axes
# whose product divides the dimension (data=2, fsdp=4)
_INDIVISIBLE_CASES = [
    ((8, 4, 8), ("batch", "seq", "embed"), [["data", "fsdp"], [], []]),  # 8 = 2 * 4: nothing dropped
    ((2, 4, 8), ("batch", "seq", "embed"), [["data"], [], []]),  # 2: data kept, fsdp dropped
    ((6, 4, 8), ("batch", "seq", "embed"), [["data"], [], []]),  # 6: data kept, fsdp dropped
    ((3, 4, 8), ("batch", "seq", "embed"), [[], [], []]),  # 3: both dropped
    ((4, 8), ("seq", "embed"), [[], ["fsdp"]]),  # 8 divides by fsdp=4
    ((4, 6), ("seq", "embed"), [[], []]),  # 6 does not: dropped
]


def test_indivisible_axes_are_dropped():
    cases = json.dumps([(shape, names) for shape, names, _ in _INDIVISIBLE_CASES])
    proc = subprocess.run([sys.executable, "-c", _INDIVISIBLE_SCRIPT % cases], env=subprocess_env(8), cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 8
    for (shape, names, expected), got in zip(_INDIVISIBLE_CASES, out["cases"], strict=True):
        assert _constraint_axes(got["hlo"]) == expected, (shape, names, got["hlo"])
        assert got["same_values"], (shape, names)
