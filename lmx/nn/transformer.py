"""Decoder-only pre-norm Transformer (Vaswani et al. 2017; pre-norm as in GPT-2, Radford et al. 2019).

    h_0 = E[tokens]                                   E: [vocab, embed], N(0, init_std^2)
    h'  = h + Attn(Norm(h), positions, segments)      for each of n_layers blocks
    h   = h' + FFN(Norm(h'))
    logits = Norm(h_L) E^T   (tie_embeddings)  or  Norm(h_L) W_out  (W_out: [embed, vocab])
Residual-branch output projections (attention `out`, FFN `down`) are initialised with
std = init_std / sqrt(2 n_layers) (GPT-2 style: each of the 2 n_layers residual additions then
contributes variance ~1/(2 n_layers) of one unscaled branch). Other matrices use init_std.

Blocks are stacked on a leading `layers` axis (nnx.vmap), and the forward runs either a
`jax.lax.scan` over that axis (config.scan_layers) or an unrolled loop over its slices; the two give
the same numbers. The block body is rematerialised according to config.remat (lmx.nn.remat).
Logits are float32: the output matmul takes compute-dtype operands and accumulates into float32.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from lmx.config import ModelConfig
from lmx.nn.attention import Attention
from lmx.nn.mlp import MLP
from lmx.nn.norms import NORMS
from lmx.nn.params import dtype_of, normal_param
from lmx.nn.remat import REMAT


def residual_out_std(config: ModelConfig) -> float:
    """init_std / sqrt(2 n_layers): the init of projections that write into the residual stream."""
    return config.init_std / math.sqrt(2 * config.n_layers)


class Block(nnx.Module):
    """Pre-norm block: x = x + attn(norm(x)); x = x + mlp(norm(x)).

    Standalone: `block = Block(config, rngs=rngs)`; `y_BxLxD = block(x_BxLxD, positions_BxL,
    segment_ids_BxL)` (positions default to arange(L); x in compute dtype, output likewise).
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        norm = NORMS[config.norm]
        out_std = residual_out_std(config)
        common = dict(
            init_std=config.init_std,
            out_std=out_std,
            param_dtype=config.param_dtype,
            compute_dtype=config.compute_dtype,
            rngs=rngs,
        )
        self.attn_norm = norm(config.d_model, config.norm_eps, param_dtype=config.param_dtype, rngs=rngs)
        self.attn = Attention(
            config.d_model,
            config.n_heads,
            config.n_kv_heads,
            config.resolved_head_dim,
            position=config.position,
            rope_theta=config.rope_theta,
            impl=config.attention_impl,
            **common,
        )
        self.mlp_norm = norm(config.d_model, config.norm_eps, param_dtype=config.param_dtype, rngs=rngs)
        self.mlp = MLP(config.d_model, config.resolved_d_ff, config.ffn, **common)

    def __call__(
        self,
        x_BxLxD: jax.Array,
        positions_BxL: jax.Array | None = None,
        segment_ids_BxL: jax.Array | None = None,
    ) -> jax.Array:
        x_BxLxD = x_BxLxD + self.attn(self.attn_norm(x_BxLxD), positions_BxL, segment_ids_BxL)
        return x_BxLxD + self.mlp(self.mlp_norm(x_BxLxD))


def _stacked_blocks(config: ModelConfig, rngs: nnx.Rngs) -> Block:
    """n_layers Blocks whose parameters share a leading axis named `layers`."""

    @nnx.split_rngs(splits=config.n_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make(rngs: nnx.Rngs) -> Block:
        return Block(config, rngs=rngs)

    return make(rngs)


class Transformer(nnx.Module):
    """Decoder-only LM: `Transformer(config, rngs=nnx.Rngs(0))(tokens_BxL) -> logits_BxLxV` (float32).

    `positions_BxL` defaults to arange(L) per row; `segment_ids_BxL` (optional) restricts attention
    to tokens of the same segment (packed documents). Parameters: `embed` [vocab, embed],
    `blocks` (a Block with every parameter stacked on a leading `layers` axis), `final_norm`, and
    `unembed` [embed, vocab] only when tie_embeddings is False.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.compute_dtype = dtype_of(config.compute_dtype)
        self.embed = normal_param(
            rngs, (config.vocab_size, config.d_model), ("vocab", "embed"), config.init_std, config.param_dtype
        )
        self.blocks = _stacked_blocks(config, rngs)
        self.final_norm = NORMS[config.norm](
            config.d_model, config.norm_eps, param_dtype=config.param_dtype, rngs=rngs
        )
        if not config.tie_embeddings:
            self.unembed = normal_param(
                rngs,
                (config.d_model, config.vocab_size),
                ("embed", "vocab"),
                config.init_std,
                config.param_dtype,
            )

    def __call__(
        self,
        tokens_BxL: jax.Array,
        positions_BxL: jax.Array | None = None,
        segment_ids_BxL: jax.Array | None = None,
    ) -> jax.Array:
        cdt = self.compute_dtype
        B, L = tokens_BxL.shape
        if positions_BxL is None:
            positions_BxL = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
        x_BxLxD = jnp.take(self.embed[...], tokens_BxL, axis=0).astype(cdt)
        x_BxLxD = self._run_blocks(x_BxLxD, positions_BxL, segment_ids_BxL)
        x_BxLxD = self.final_norm(x_BxLxD).astype(cdt)
        if self.config.tie_embeddings:
            w_DxV = self.embed[...].astype(cdt).T
        else:
            w_DxV = self.unembed[...].astype(cdt)
        return jnp.einsum("bld,dv->blv", x_BxLxD, w_DxV, preferred_element_type=jnp.float32)

    def _run_blocks(self, x_BxLxD, positions_BxL, segment_ids_BxL):
        graphdef, state = nnx.split(self.blocks)

        def body(x_BxLxD, layer_state):
            block = nnx.merge(graphdef, layer_state)
            return block(x_BxLxD, positions_BxL, segment_ids_BxL), None

        body = REMAT[self.config.remat](body, not self.config.scan_layers)
        if self.config.scan_layers:
            x_BxLxD, _ = jax.lax.scan(body, x_BxLxD, state)
            return x_BxLxD
        for i in range(self.config.n_layers):
            x_BxLxD, _ = body(x_BxLxD, jax.tree.map(lambda a, i=i: a[i], state))
        return x_BxLxD
