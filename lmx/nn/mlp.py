"""Position-wise feed-forward network with a registry of activations.

Gated variants (Shazeer 2020, "GLU Variants Improve Transformer", arXiv:2002.05202) use three
matrices, gate/up [embed, mlp] and down [mlp, embed]:
    FFN(x) = (act(x W_gate) * (x W_up)) W_down,
    swiglu: act = SiLU,  geglu: act = GELU,  reglu: act = ReLU,  glu: act = sigmoid (Dauphin et al. 2017).
Plain variants use two matrices: FFN(x) = act(x W_up) W_down with act in {gelu, gelu_tanh, relu, silu}.
`gelu` is the exact erf form, GELU(x) = x * Phi(x) (Hendrycks & Gimpel 2016, arXiv:1606.08415);
`gelu_tanh` is their tanh approximation 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) used by
GPT-2. No biases. The hidden size d_ff comes from model.d_ff or model.ffn_ratio (4 for plain FFNs,
8/3 for gated ones keeps the parameter count equal), rounded up to model.ffn_multiple_of.

Standalone: `self.ffn = MLP(d_model, d_ff, "swiglu", rngs=rngs)`, then `y_BxLxD = self.ffn(x_BxLxD)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from lmx import registry
from lmx.nn import precision
from lmx.nn.params import dtype_of, normal_param


def gelu(x: jax.Array) -> jax.Array:
    """Exact GELU: x * Phi(x) with the normal CDF Phi (erf form)."""
    return jax.nn.gelu(x, approximate=False)


@dataclasses.dataclass(frozen=True)
class FFNActivation:
    """An FFN variant: the elementwise nonlinearity and whether it gates a second projection."""

    fn: Callable[[jax.Array], jax.Array]
    gated: bool


FFN_ACTIVATIONS = registry.FFN_ACTIVATIONS.register_all({
    "swiglu": FFNActivation(jax.nn.silu, gated=True),
    "geglu": FFNActivation(gelu, gated=True),
    "reglu": FFNActivation(jax.nn.relu, gated=True),
    "glu": FFNActivation(jax.nn.sigmoid, gated=True),
    "gelu": FFNActivation(gelu, gated=False),
    "gelu_tanh": FFNActivation(lambda x: jax.nn.gelu(x, approximate=True), gated=False),
    "relu": FFNActivation(jax.nn.relu, gated=False),
    "silu": FFNActivation(jax.nn.silu, gated=False),
})


class MLP(nnx.Module):
    """FFN over the last axis: [.., embed] -> [.., mlp] -> [.., embed].

    Input matrices are initialised N(0, init_std^2), `down` N(0, out_std^2) (out_std defaults to
    init_std; the Transformer passes init_std / sqrt(2 n_layers)). Parameters are stored in
    `param_dtype`; matmuls run in `compute_dtype` and the output has `compute_dtype`.
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        activation: str = "swiglu",
        *,
        init_std: float = 0.02,
        out_std: float | None = None,
        param_dtype=jnp.float32,
        compute_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if activation not in FFN_ACTIVATIONS:
            raise ValueError(
                f"unknown FFN activation {activation!r}; choose one of {', '.join(FFN_ACTIVATIONS)}"
            )
        self.activation = activation
        self.compute_dtype = dtype_of(compute_dtype)
        out_std = init_std if out_std is None else out_std
        if FFN_ACTIVATIONS[activation].gated:
            self.gate = normal_param(rngs, (d_model, d_ff), ("embed", "mlp"), init_std, param_dtype)
        self.up = normal_param(rngs, (d_model, d_ff), ("embed", "mlp"), init_std, param_dtype)
        self.down = normal_param(rngs, (d_ff, d_model), ("mlp", "embed"), out_std, param_dtype)

    def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
        spec = FFN_ACTIVATIONS[self.activation]
        cdt = self.compute_dtype
        x_BxLxD = x_BxLxD.astype(cdt)
        up_BxLxF = precision.einsum("bld,df->blf", x_BxLxD, self.up[...], cdt)
        if spec.gated:  # act(x W_gate) * (x W_up): the nonlinearity is on the gate branch
            gate_BxLxF = precision.einsum("bld,df->blf", x_BxLxD, self.gate[...], cdt)
            h_BxLxF = spec.fn(gate_BxLxF) * up_BxLxF
        else:
            h_BxLxF = spec.fn(up_BxLxF)
        return precision.einsum("blf,fd->bld", h_BxLxF, self.down[...], cdt)
