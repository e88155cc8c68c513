"""One transformer layer: a token mixer (attention or a selective SSM), optional cross-attention, and
an FFN, each wrapped by the residual placement `model.norm_position`.

    pre       x + f(norm(x))                        (GPT-2, Llama)
    post      norm(x + f(x))                        (Vaswani et al. 2017)
    deepnorm  norm(alpha x + f(x)); the value, output and FFN projections are initialised with their
              std times beta (Wang et al. 2022, DeepNet, arXiv:2203.00555; constants in `deepnorm_constants`)
    rezero    x + g f(x) with a learned scalar g initialised to 0 and no norms (Bachlechner et al. 2020,
              arXiv:2003.04887); one g per layer, shared by its sublayers

Standalone: `block = Block(config, rngs=rngs)`; `y = block(x_BxLxD)` (causal, positions 0..L-1), or
`block(x_BxLxD, positions_BxL)`, or `block(x_BxLxD, LayerInputs(...))` for masks, biases, cross-attention.
Decoding is the same call with a cache: `y, state = block(x_BxTxD, inputs, LayerCache(state, plan))`
(lmx.nn.kv_cache builds both).
"""

from __future__ import annotations

import math

import jax
from flax import nnx

from lmx import registry
from lmx.config import ModelConfig
from lmx.nn.attention import Attention
from lmx.nn.layer_inputs import LayerCache, LayerInputs
from lmx.nn.mlp import MLP
from lmx.nn.norms import NORMS
from lmx.nn.params import constant_param
from lmx.nn.ssm import SelectiveSSM


def deepnorm_constants(arch: str, n_encoder: int, n_decoder: int, part: str) -> tuple[float, float]:
    """(alpha, beta) of DeepNet's Table 1 for a layer in `part` ("encoder" or "decoder") of `arch`."""
    if registry.ARCHITECTURES[arch].has_cross_attention:  # encoder-decoder constants
        if part == "encoder":
            return 0.81 * (n_encoder**4 * n_decoder) ** (1 / 16), 0.87 * (n_encoder**4 * n_decoder) ** (-1 / 16)
        return (3 * n_decoder) ** 0.25, (12 * n_decoder) ** -0.25
    n = n_encoder if part == "encoder" else n_decoder
    return (2 * n) ** 0.25, (8 * n) ** -0.25


def _small_init(config: ModelConfig) -> tuple[float, float]:  # Nguyen & Salazar 2019: sqrt(2 / (5 d))
    std = math.sqrt(2 / (5 * config.d_model))
    return std, std


def _scaled_init(config: ModelConfig) -> tuple[float, float]:
    """GPT-2: projections that write into the residual stream get std / sqrt(2 n_layers)."""
    return config.init_std, config.init_std / math.sqrt(2 * config.n_layers)


# model.init -> config -> (std of the projections, std of those writing into the residual stream)
INITS = registry.INITS.register_all({
    "scaled": _scaled_init,
    "normal": lambda config: (config.init_std, config.init_std),
    "small": _small_init,
})


def init_stds(config: ModelConfig, beta: float) -> dict:
    """Initial standard deviations of the projections by `model.init` (and DeepNorm's beta)."""
    base, out = INITS[config.init](config)
    return {"init_std": base, "value_std": base * beta, "out_std": out * beta, "ffn_std": base * beta}


# model.norm.placement -> how a sublayer f joins the residual stream x (norm: the sublayer's norm)
NORM_PLACEMENTS = registry.NORM_PLACEMENTS.register_all({
    "pre": lambda block, x, f, norm: x + f(norm(x)),
    "post": lambda block, x, f, norm: norm(x + f(x)),
    "deepnorm": lambda block, x, f, norm: norm(x * block.alpha + f(x)),
    "rezero": lambda block, x, f, norm: x + block.gate[...].astype(x.dtype) * f(x),
})


def _attention_mixer(config: ModelConfig, stds: dict, rngs: nnx.Rngs):
    return Attention.from_config(config, init_std=stds["init_std"], value_std=stds["value_std"],
                                 out_std=stds["out_std"], rngs=rngs)


def _ssm_mixer(config: ModelConfig, stds: dict, rngs: nnx.Rngs):
    return SelectiveSSM(config.d_model, config.ssm.state, config.ssm.expand, config.ssm.conv, init_std=stds["init_std"],
                        out_std=stds["out_std"], param_dtype=config.param_dtype, compute_dtype=config.compute_dtype,
                        rngs=rngs)


# model.layer_pattern letters -> the token mixer of that layer type
MIXERS = registry.LAYER_TYPES.register_all({"A": _attention_mixer, "M": _ssm_mixer})


class Block(nnx.Module):
    """One layer. Parameters sit at fixed paths whatever the config: `mixer` (attention or SSM),
    `mixer_norm`, `cross` and `cross_norm` (encoder-decoder decoders), `ffn`, `ffn_norm`, and `gate`
    (ReZero, which has no norms)."""

    def __init__(self, config: ModelConfig, *, layer_type: str = "A", cross: bool = False,
                 deepnorm: tuple[float, float] = (1.0, 1.0), rngs: nnx.Rngs):
        self.placement = config.norm.placement
        self.alpha = deepnorm[0] if self.placement == "deepnorm" else 1.0
        stds = init_stds(config, deepnorm[1] if self.placement == "deepnorm" else 1.0)
        self.layer_type = layer_type
        self.mixer = MIXERS[layer_type](config, stds, rngs)
        self.cross = Attention.from_config(config, cross=True, init_std=stds["init_std"], value_std=stds["value_std"],
                                           out_std=stds["out_std"], rngs=rngs) if cross else None
        self.ffn = MLP(config.d_model, config.resolved_d_ff, config.ffn.activation, init_std=stds["ffn_std"],
                       out_std=stds["out_std"] if self.placement != "deepnorm" else stds["ffn_std"],
                       param_dtype=config.param_dtype, compute_dtype=config.compute_dtype, rngs=rngs)
        if self.placement == "rezero":
            self.gate = constant_param(0.0, (), (), config.param_dtype)
            self.mixer_norm = self.cross_norm = self.ffn_norm = None
        else:
            norm = NORMS[config.norm.kind]
            kwargs = dict(use_bias=config.norm.bias, param_dtype=config.param_dtype, rngs=rngs)
            self.mixer_norm = norm(config.d_model, config.norm.eps, **kwargs)
            self.cross_norm = norm(config.d_model, config.norm.eps, **kwargs) if cross else None
            self.ffn_norm = norm(config.d_model, config.norm.eps, **kwargs)

    def _residual(self, x, f, norm):
        return NORM_PLACEMENTS[self.placement](self, x, f, norm)

    def __call__(self, x_BxLxD: jax.Array, inputs: LayerInputs | jax.Array | None = None,
                 cache: LayerCache | None = None):
        """y [B, L, D]; with a `cache` (its state {"mixer": ..., "cross": ...} and the call's write
        plan), (y, the new state). `inputs`: a LayerInputs, or just positions [B, L] (causal
        self-attention), or None (positions 0..L-1)."""
        if not isinstance(inputs, LayerInputs):
            inputs = LayerInputs.standalone(x_BxLxD, inputs)
        new_state = {}

        def sublayer(name: str):
            module = getattr(self, name)
            if cache is None:
                return lambda h: module(h, inputs)

            def call(h):
                y, new_state[name] = module(h, inputs, cache=cache.part(name))
                return y

            return call

        x_BxLxD = self._residual(x_BxLxD, sublayer("mixer"), self.mixer_norm)
        if self.cross is not None:
            x_BxLxD = self._residual(x_BxLxD, sublayer("cross"), self.cross_norm)
        y_BxLxD = self._residual(x_BxLxD, self.ffn, self.ffn_norm).astype(x_BxLxD.dtype)
        return y_BxLxD if cache is None else (y_BxLxD, new_state)


class LayerGroup(nnx.Module):
    """One repetition of `model.layer_pattern` (e.g. "AAM"): the unit that is stacked and scanned."""

    def __init__(self, config: ModelConfig, *, cross: bool = False, deepnorm=(1.0, 1.0), rngs: nnx.Rngs):
        self.layers = nnx.List([Block(config, layer_type=t, cross=cross, deepnorm=deepnorm, rngs=rngs)
                                for t in config.layer_pattern])

    def __call__(self, x_BxLxD, inputs: LayerInputs, cache: LayerCache | None = None):
        """Like Block; a cache's state is a tuple with one entry per layer of the group."""
        if cache is None:
            for layer in self.layers:
                x_BxLxD = layer(x_BxLxD, inputs)
            return x_BxLxD
        states = []
        for layer, state in zip(self.layers, cache.state):
            x_BxLxD, state = layer(x_BxLxD, inputs, LayerCache(state, cache.plan))
            states.append(state)
        return x_BxLxD, tuple(states)
