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
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from lmx import registry
from lmx.config import ModelConfig
from lmx.nn.attention import Attention
from lmx.nn.attention_kernels import keys_transposed
from lmx.nn.kv_cache import write_keys, write_values
from lmx.nn.mlp import MLP
from lmx.nn.norms import NORMS
from lmx.nn.params import constant_param

MIXER_NAMES = registry.LAYER_TYPES.register_all({"A": "attn", "M": "ssm"})  # attribute names of the token mixer


@dataclasses.dataclass
class LayerInputs:
    """What every layer of a stack sees besides the residual stream (computed once per forward)."""

    positions: jax.Array
    segment_ids: jax.Array | None = None
    mask: jax.Array | None = None
    bias: jax.Array | None = None
    causal: bool = True
    mask_kind: str | None = None
    window: int = 0
    valid: jax.Array | None = None  # [B, L] real (non-padding) tokens; linear attention drops the others
    context: jax.Array | None = None  # encoder states for cross-attention
    context_mask: jax.Array | None = None
    # incremental decoding (lmx.nn.kv_cache): key positions of the attended keys, the cache slot of
    # each new token (== capacity: not written), and whether the cache starts empty (prefill)
    k_positions: jax.Array | None = None
    slots: jax.Array | None = None
    fresh: bool = False
    write_first: bool = False  # write the new k/v into the layer's own cache, then attend to the cache alone


def deepnorm_constants(arch: str, n_encoder: int, n_decoder: int, part: str) -> tuple[float, float]:
    """(alpha, beta) of DeepNet's Table 1 for a layer in `part` ("encoder" or "decoder")."""
    if arch == "encoder_decoder":
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


class Block(nnx.Module):
    def __init__(self, config: ModelConfig, *, layer_type: str = "A", cross: bool = False,
                 deepnorm: tuple[float, float] = (1.0, 1.0), rngs: nnx.Rngs):
        self.placement = config.norm.placement
        self.alpha = deepnorm[0] if self.placement == "deepnorm" else 1.0
        stds = init_stds(config, deepnorm[1] if self.placement == "deepnorm" else 1.0)
        common = dict(param_dtype=config.param_dtype, compute_dtype=config.compute_dtype, rngs=rngs)
        attention = dict(
            n_kv_heads=config.n_kv_heads, head_dim=config.resolved_head_dim, rope_theta=config.position.rope.theta,
            rope_layout=config.position.rope.layout, rope_fraction=config.position.rope.fraction,
            xpos_scale_base=config.position.xpos.scale_base, shaw_max_distance=config.position.shaw.max_distance,
            impl=config.attention.kernel, qk_norm=config.attention.qk_norm, norm_eps=config.norm.eps,
            init_std=stds["init_std"], value_std=stds["value_std"], out_std=stds["out_std"], **common,
        )
        self.layer_type = layer_type
        self.mixer_name = MIXER_NAMES[layer_type]
        if layer_type == "A":
            mixer = Attention(config.d_model, config.n_heads, position=config.position.kind,
                              kind=config.attention.kind, feature_map=config.attention.feature_map, **attention)
        else:
            from lmx.nn.ssm import SelectiveSSM

            mixer = SelectiveSSM(config.d_model, config.ssm.state, config.ssm.expand, config.ssm.conv,
                                 init_std=stds["init_std"], out_std=stds["out_std"], **common)
        setattr(self, self.mixer_name, mixer)
        self.cross_attn = Attention(config.d_model, config.n_heads, position="none", cross=True, **attention) \
            if cross else None
        self.mlp = MLP(config.d_model, config.resolved_d_ff, config.ffn.activation, init_std=stds["ffn_std"],
                       out_std=stds["out_std"] if self.placement != "deepnorm" else stds["ffn_std"], **common)
        if self.placement == "rezero":
            self.gate = constant_param(0.0, (), (), config.param_dtype)
        else:
            norm = NORMS[config.norm.kind]
            kwargs = dict(use_bias=config.norm.bias, param_dtype=config.param_dtype, rngs=rngs)
            setattr(self, f"{self.mixer_name}_norm", norm(config.d_model, config.norm.eps, **kwargs))
            self.cross_norm = norm(config.d_model, config.norm.eps, **kwargs) if cross else None
            self.mlp_norm = norm(config.d_model, config.norm.eps, **kwargs)

    def _residual(self, x, f, norm):
        return NORM_PLACEMENTS[self.placement](self, x, f, norm)

    def _mix(self, x, inputs: LayerInputs):
        mixer = getattr(self, self.mixer_name)
        if self.layer_type == "A":
            return mixer(x, inputs.positions, inputs.segment_ids, mask=inputs.mask, bias=inputs.bias,
                         causal=inputs.causal, mask_kind=inputs.mask_kind, window=inputs.window,
                         valid_BxS=inputs.valid)
        return mixer(x, inputs.segment_ids)

    def __call__(self, x_BxLxD: jax.Array, inputs: LayerInputs | jax.Array | None = None) -> jax.Array:
        """`inputs`: a LayerInputs, or just positions [B, L] (causal self-attention), or None (arange)."""
        if not isinstance(inputs, LayerInputs):
            B, L = x_BxLxD.shape[:2]
            positions = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L)) if inputs is None else inputs
            inputs = LayerInputs(positions=positions)
        norm = lambda name: getattr(self, name, None)
        x_BxLxD = self._residual(x_BxLxD, lambda h: self._mix(h, inputs), norm(f"{self.mixer_name}_norm"))
        if self.cross_attn is not None:
            cross = lambda h: self.cross_attn(h, inputs.positions, mask=inputs.context_mask, causal=False,
                                              mask_kind="dynamic", context_BxSxD=inputs.context)
            x_BxLxD = self._residual(x_BxLxD, cross, norm("cross_norm"))
        return self._residual(x_BxLxD, self.mlp, norm("mlp_norm")).astype(x_BxLxD.dtype)


    def extend(self, x_BxTxD: jax.Array, inputs: LayerInputs, cache: dict) -> tuple[jax.Array, dict]:
        """Incremental forward over T new tokens given this layer's decoding cache (read only).
        Returns the output and the layer's updates: "k", "v" [B, T, K, H] of the new tokens (the
        caller writes them at `inputs.slots`; caches are keys [B, K, H, C], values [B, K, C, H]), or
        with `inputs.write_first` the layer's whole k/v caches with them written, a new SSMCache, and,
        when `fresh`, the cross-attention keys/values of the encoder states (lmx.nn.kv_cache.apply_updates)."""
        updates = {}
        norm = lambda name: getattr(self, name, None)

        def attention(h):
            attn = self.attn
            q = attn.project_queries(h, inputs.positions)
            k, v = attn.project_keys_values(h, inputs.positions)
            if attn.kind == "linear":
                y, updates["S"], updates["z"] = attn.extend_linear(q, k, v, None if inputs.fresh else cache,
                                                                   inputs.valid)
                return y
            if inputs.write_first:  # per-layer buffers: update in place, then read only the cache
                updates["k"] = write_keys(cache["k"], k, inputs.slots)
                updates["v"] = write_values(cache["v"], v, inputs.slots)
                return attn.attend(q, None, None, mask=inputs.mask, bias=inputs.bias, q_positions=inputs.positions,
                                   k_positions=inputs.k_positions, cached_kv=(updates["k"], updates["v"]))
            updates["k"], updates["v"] = k, v
            cached = None if inputs.fresh else (cache["k"], cache["v"])
            return attn.attend(q, k, v, mask=inputs.mask, bias=inputs.bias, q_positions=inputs.positions,
                               k_positions=inputs.k_positions, cached_kv=cached)

        def ssm(h):
            if inputs.fresh:
                y, updates["ssm"] = self.ssm(h, return_cache=True, valid_BxL=inputs.valid)
            elif h.shape[1] == 1:
                y, updates["ssm"] = self.ssm.step(h[:, 0], cache["ssm"])
                y = y[:, None]
            else:
                y, updates["ssm"] = self.ssm(h, cache=cache["ssm"], return_cache=True)
            return y

        x_BxTxD = self._residual(x_BxTxD, attention if self.layer_type == "A" else ssm,
                                 norm(f"{self.mixer_name}_norm"))
        if self.cross_attn is not None:
            if inputs.fresh:  # the encoder states' keys/values, kept in the cache's layouts
                k, v = self.cross_attn.project_keys_values(inputs.context, None)
                updates["cross_k"], updates["cross_v"] = keys_transposed(k), v.transpose(0, 2, 1, 3)
                context_kv = updates["cross_k"], updates["cross_v"]
            else:
                context_kv = cache["cross_k"], cache["cross_v"]

            def cross(h):
                q = self.cross_attn.project_queries(h, inputs.positions)
                return self.cross_attn.attend(q, None, None, mask=inputs.context_mask, cached_kv=context_kv)

            x_BxTxD = self._residual(x_BxTxD, cross, norm("cross_norm"))
        return self._residual(x_BxTxD, self.mlp, norm("mlp_norm")).astype(x_BxTxD.dtype), updates


class LayerGroup(nnx.Module):
    """One repetition of `model.layer_pattern` (e.g. "AAM"): the unit that is stacked and scanned."""

    def __init__(self, config: ModelConfig, *, cross: bool = False, deepnorm=(1.0, 1.0), rngs: nnx.Rngs):
        self.layers = nnx.List([Block(config, layer_type=t, cross=cross, deepnorm=deepnorm, rngs=rngs)
                                for t in config.layer_pattern])

    def __call__(self, x_BxLxD, inputs: LayerInputs):
        for layer in self.layers:
            x_BxLxD = layer(x_BxLxD, inputs)
        return x_BxLxD

    def extend(self, x_BxTxD, inputs: LayerInputs, cache: tuple):
        updates = []
        for layer, layer_cache in zip(self.layers, cache):
            x_BxTxD, layer_updates = layer.extend(x_BxTxD, inputs, layer_cache)
            updates.append(layer_updates)
        return x_BxTxD, tuple(updates)
