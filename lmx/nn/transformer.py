"""Transformer language models for every `model.arch`.

    decoder          causal LM: h = Stack(Embed(tokens)), logits = Unembed(FinalNorm(h))
    prefix_lm        the same network; attention is bidirectional inside each example's prefix and
                     causal after it (Raffel et al. 2020, sec. 3.2.1); loss on the suffix only
    encoder          bidirectional stack, masked-LM head (Devlin et al. 2019); `sentence_embedding`
                     pools the final states (mean over real tokens, or the first token)
    encoder_decoder  T5-style (Raffel et al. 2020): bidirectional encoder, causal decoder with
                     cross-attention to the encoder states, shared token embedding

Embedding: token table [vocab, embed] (times sqrt(d_model) with `scale_embeddings`), plus the
absolute position signal for position in {sinusoidal, learned, base_n}. ALiBi and T5 biases are
computed once per forward (the T5 table is shared by all layers) and passed to every layer with the
mask. Layers are stacked on a leading `layers` axis — one entry per repetition of
`model.layer_pattern` — and run with `jax.lax.scan` (or an unrolled loop, `scan_layers=False`), under
the remat policy `model.remat`. Logits are float32 (`logit_soft_cap`: cap * tanh(logits / cap),
Gemma 2). The residual stream carries sharding constraints (logical batch, seq, embed; lmx.nn.sharding),
no-ops unless traced inside `lmx.parallel.activations.activation_sharding`.

Standalone: `model = Transformer(config, rngs=nnx.Rngs(0))`; `logits_BxLxV = model(tokens_BxL)`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from lmx import registry
from lmx.config import ModelConfig
from lmx.nn import masks as mask_lib
from lmx.nn.absolute_positions import BaseNPositions, LearnedPositions, Sinusoidal
from lmx.nn.blocks import Block, LayerGroup, deepnorm_constants, init_stds
from lmx.nn.kv_cache import DecodeCache, init_cache, plan_call, unstack_layers
from lmx.nn.layer_inputs import LayerCache, LayerInputs, MaskKind, WritePlan
from lmx.nn.norms import NORMS
from lmx.nn.params import dtype_of, normal_param
from lmx.nn.position_bias import T5RelativeBias, alibi_bias, alibi_slopes
from lmx.nn.remat import REMAT
from lmx.nn.sharding import constrain

ACTIVATION_NAMES = ("batch", "seq", "embed")  # logical names of the residual stream [B, L, D]

ABSOLUTE_POSITIONS = {
    "sinusoidal": lambda c, rngs: Sinusoidal(c.d_model),
    "learned": lambda c, rngs: LearnedPositions(c.max_seq_len, c.d_model, init_std=c.init_std,
                                                param_dtype=c.param_dtype, rngs=rngs),
    "base_n": lambda c, rngs: BaseNPositions(c.max_seq_len, c.d_model, c.position.base_n.base, init_std=c.init_std,
                                             param_dtype=c.param_dtype, rngs=rngs),
}


def residual_out_std(config: ModelConfig) -> float:
    """The init std of projections that write into the residual stream (see lmx.nn.blocks.init_stds)."""
    return init_stds(config, 1.0)["out_std"]


class _Embedding(nnx.Module):
    """Token embedding `embed` [vocab, embed] (+ absolute `positions`) and the output projection
    (tied to `embed`, or `unembed` [embed, vocab])."""

    def _init_embedding(self, config: ModelConfig, rngs: nnx.Rngs) -> None:
        self.config = config
        self.embed = normal_param(rngs, (config.vocab_size, config.d_model), ("vocab", "embed"),
                                  config.init_std, config.param_dtype)
        make_positions = ABSOLUTE_POSITIONS.get(config.position.kind)
        self.positions = make_positions(config, rngs) if make_positions else None
        if not config.tie_embeddings:
            self.unembed = normal_param(rngs, (config.d_model, config.vocab_size), ("embed", "vocab"),
                                        config.init_std, config.param_dtype)

    def _embed_tokens(self, tokens_BxL, positions_BxL):
        cdt = dtype_of(self.config.compute_dtype)
        x = jnp.take(self.embed[...], tokens_BxL, axis=0).astype(jnp.float32)
        if self.config.scale_embeddings:
            x = x * jnp.sqrt(jnp.float32(self.config.d_model))
        if self.positions is not None:
            x = x + self.positions(positions_BxL)
        return constrain(x.astype(cdt), ACTIVATION_NAMES)

    def _extend_stack(self, stack, norm, tokens_BxT, positions_BxT, inputs, plan, cache: DecodeCache, positions_BxC,
                      logits_at_B, layers):
        """The shared tail of `extend`: embed, run the stack over its caches, (gather,) norm, logits."""
        x = self._embed_tokens(tokens_BxT, positions_BxT)
        x, new_layers = run_stack(self.config, stack, x, inputs, cache.layers, plan, layers)
        x = _gather_rows(x, logits_at_B)
        if norm is not None:
            x = norm(x)
        return self._logits(x), dataclasses.replace(cache, positions_BxC=positions_BxC, layers=new_layers)

    def _logits(self, x_BxLxD):
        cdt = dtype_of(self.config.compute_dtype)
        w_DxV = self.embed[...].astype(cdt).T if self.config.tie_embeddings else self.unembed[...].astype(cdt)
        logits = jnp.einsum("bld,dv->blv", x_BxLxD.astype(cdt), w_DxV, preferred_element_type=jnp.float32)
        cap = self.config.logit_soft_cap
        return cap * jnp.tanh(logits / cap) if cap else logits


def make_stack(config: ModelConfig, n_layers: int, *, cross: bool = False, deepnorm=(1.0, 1.0),
               pattern: str | None = None, rngs: nnx.Rngs) -> nnx.Module:
    """`n_layers` layers stacked on a leading `layers` axis: a Block per layer when the pattern has one
    entry, else a LayerGroup per repetition of the pattern."""
    pattern = pattern or config.layer_pattern
    layer_config = config if pattern == config.layer_pattern else _with_pattern(config, pattern)

    @nnx.split_rngs(splits=n_layers // len(pattern))
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def make(rngs: nnx.Rngs):
        if len(pattern) == 1:
            return Block(layer_config, layer_type=pattern, cross=cross, deepnorm=deepnorm, rngs=rngs)
        return LayerGroup(layer_config, cross=cross, deepnorm=deepnorm, rngs=rngs)

    return make(rngs)


def run_stack(config: ModelConfig, stack: nnx.Module, x_BxLxD, inputs: LayerInputs, caches=None,
              plan: WritePlan | None = None, layers: list | None = None):
    """Run the stacked layers: training and evaluation (no caches: returns x) and decoding (returns x
    and the new caches) share the layer call. Without caches the layers run under a scan (or an
    unrolled loop, `scan_layers=False`) wrapped by the remat policy. With a list of per-layer caches
    they run unrolled over `layers` (kv_cache.unstack_layers, sliced once outside a decode loop),
    each writing its own buffers in place; with stacked caches a scan carries them and writes each
    layer's new state back at its index."""
    if isinstance(caches, list):
        new_caches = []
        for layer, state in zip(unstack_layers(stack) if layers is None else layers, caches):
            x_BxLxD, state = layer(x_BxLxD, inputs, LayerCache(state, plan))
            new_caches.append(state)
        return x_BxLxD, new_caches
    graphdef, params = nnx.split(stack)
    n_groups = jax.tree.leaves(params)[0].shape[0]
    if caches is None:
        def body(x, layer_params):
            return constrain(nnx.merge(graphdef, layer_params)(x, inputs), ACTIVATION_NAMES), None

        body = REMAT[config.remat](body, not config.scan_layers)
        carry = x_BxLxD
        xs = params
    else:
        def body(carry, layer):
            x, stacked = carry
            layer_params, index = layer
            state = jax.tree.map(lambda a: a[index], stacked)
            x, state = nnx.merge(graphdef, layer_params)(x, inputs, LayerCache(state, plan))
            return (x, jax.tree.map(lambda a, new: a.at[index].set(new.astype(a.dtype)), stacked, state)), None

        carry = (x_BxLxD, caches)
        xs = (params, jnp.arange(n_groups))
    if config.scan_layers:
        return jax.lax.scan(body, carry, xs)[0]
    for i in range(n_groups):
        carry, _ = body(carry, jax.tree.map(lambda a, i=i: a[i], xs))
    return carry


def _with_pattern(config: ModelConfig, pattern: str) -> ModelConfig:
    return dataclasses.replace(config, layer_pattern=pattern)


class PositionBias(nnx.Module):
    """The logit bias of ALiBi (fixed slopes) or T5 (one learned table shared by all layers)."""

    def __init__(self, config: ModelConfig, *, bidirectional: bool, rngs: nnx.Rngs):
        self.kind = config.position.kind
        self.bidirectional = bidirectional
        if self.kind == "t5":
            self.t5 = T5RelativeBias(config.n_heads, config.position.t5.num_buckets, config.position.t5.max_distance,
                                     bidirectional=bidirectional, init_std=config.init_std, rngs=rngs)
        self.slopes = tuple(float(s) for s in alibi_slopes(config.n_heads)) if self.kind == "alibi" else None

    def __call__(self, q_positions_BxL, k_positions_BxS):
        if self.kind == "t5":
            return self.t5(q_positions_BxL, k_positions_BxS)
        return alibi_bias(jnp.asarray(self.slopes), q_positions_BxL, k_positions_BxS, causal=not self.bidirectional)


def _causal_mask(config: ModelConfig, q_positions_BxL, k_positions_BxS=None):
    """Mask and kernel hint for a causal stack by `attention.pattern` (keys default to the queries)."""
    k_positions_BxS = q_positions_BxL if k_positions_BxS is None else k_positions_BxS
    return mask_lib.ATTENTION_PATTERNS[config.attention.pattern](q_positions_BxL, k_positions_BxS, config.attention)


def _extend_inputs(cache: DecodeCache, positions_BxT, valid_BxT, fresh: bool, mask_fn, bias_fn, ring_possible: bool,
                   **extra):
    """(LayerInputs, WritePlan, positions after) of an incremental call: the keys are the cache (unless
    `fresh`) plus the new tokens, so the mask and bias cover the plan's key positions."""
    if valid_BxT is None:
        valid_BxT = jnp.ones(positions_BxT.shape, bool)
    plan, positions_after = plan_call(cache, positions_BxT, valid_BxT, fresh, ring_possible)
    k_positions = plan.k_positions
    mask = mask_lib.combine(mask_fn(positions_BxT, k_positions), mask_lib.padding(k_positions >= 0))
    bias = bias_fn(positions_BxT, k_positions) if bias_fn is not None else None
    inputs = LayerInputs(positions=positions_BxT, mask=mask, bias=bias, mask_kind=MaskKind.DYNAMIC, valid=valid_BxT,
                         **extra)
    return inputs, plan, positions_after


def _gather_rows(h_BxTxD, index_B):
    return h_BxTxD if index_B is None else h_BxTxD[jnp.arange(h_BxTxD.shape[0]), index_B][:, None]


def _final_norm(config: ModelConfig, rngs):
    if config.norm.placement != "pre":  # post-norm/DeepNorm outputs are already normalised; ReZero has none
        return None
    return NORMS[config.norm.kind](config.d_model, config.norm.eps, use_bias=config.norm.bias,
                              param_dtype=config.param_dtype, rngs=rngs)


class Transformer(_Embedding):
    """Decoder, prefix-LM or encoder language model (by `config.arch`); see the module docstring."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self._init_embedding(config, rngs)
        self.causal = config.architecture.causal
        self.prefix = config.architecture.prefix  # bidirectional over each example's prefix (prefix-LM)
        part = "decoder" if self.causal else "encoder"
        deepnorm = deepnorm_constants(config.arch, config.n_layers, config.n_layers, part)
        self.blocks = make_stack(config, config.n_layers, deepnorm=deepnorm, rngs=rngs)
        self.final_norm = _final_norm(config, rngs)
        self.position_bias = PositionBias(config, bidirectional=config.architecture.bidirectional_bias, rngs=rngs) \
            if config.position.kind in ("alibi", "t5") else None

    def _inputs(self, positions_BxL, segment_ids_BxL, prefix_len_B, valid_BxL) -> LayerInputs:
        config = self.config
        if self.prefix:
            if prefix_len_B is None:
                raise ValueError(f"arch={config.arch} needs prefix_len_B (the prefix length of each example)")
            mask, kind = mask_lib.prefix_lm(positions_BxL, positions_BxL, prefix_len_B), MaskKind.DYNAMIC
        elif self.causal:
            mask, kind = _causal_mask(config, positions_BxL)
        else:
            mask, kind = None, MaskKind.BIDIRECTIONAL
        if segment_ids_BxL is not None:
            mask, kind = mask_lib.combine(mask, mask_lib.document(segment_ids_BxL, segment_ids_BxL)), MaskKind.DYNAMIC
        if valid_BxL is not None:
            mask, kind = mask_lib.combine(mask, mask_lib.padding(valid_BxL)), MaskKind.DYNAMIC
        bias = self.position_bias(positions_BxL, positions_BxL) if self.position_bias is not None else None
        return LayerInputs(positions=positions_BxL, segment_ids=segment_ids_BxL, mask=mask, bias=bias,
                           causal=self.causal, mask_kind=kind, window=config.attention.window, valid=valid_BxL)

    def hidden_states(self, tokens_BxL, positions_BxL=None, segment_ids_BxL=None, prefix_len_B=None,
                      valid_BxL=None):
        B, L = tokens_BxL.shape
        if positions_BxL is None:
            positions_BxL = mask_lib.default_positions(B, L)
        x = self._embed_tokens(tokens_BxL, positions_BxL)
        x = run_stack(self.config, self.blocks, x, self._inputs(positions_BxL, segment_ids_BxL, prefix_len_B,
                                                                  valid_BxL))
        if self.final_norm is not None:
            x = self.final_norm(x)
        return constrain(x.astype(dtype_of(self.config.compute_dtype)), ACTIVATION_NAMES)

    def __call__(self, tokens_BxL, positions_BxL=None, segment_ids_BxL=None, prefix_len_B=None, valid_BxL=None):
        """Logits [B, L, V] float32 (next-token for causal archs, masked-token for the encoder)."""
        return self._logits(self.hidden_states(tokens_BxL, positions_BxL, segment_ids_BxL,
                                                       prefix_len_B, valid_BxL))

    def extend(self, tokens_BxT, positions_BxT, cache: DecodeCache, *, valid_BxT=None, fresh: bool = False,
               prefix_len_B=None, logits_at_B=None, layers: list | None = None):
        """Incremental forward of a causal model (lmx.nn.kv_cache): T new tokens per row at the given
        positions, attending to the cached tokens and to each other; returns (logits, updated cache).
        `fresh` ignores the cache's contents (a prompt's prefill); `valid_BxT` marks real tokens of
        right-padded rows; `logits_at_B` returns only the logits at index logits_at_B[b] ([B, 1, V]).
        For arch=prefix_lm, `prefix_len_B` is each row's prefix (the prompt). `layers`: the blocks
        from `kv_cache.unstack_layers(model.blocks)`, for caches made with `per_layer=True`."""
        config = self.config
        if not self.causal:
            raise ValueError(f"arch={config.arch} is not autoregressive; it has no incremental decoding")
        if self.prefix:
            if prefix_len_B is None:
                raise ValueError(f"arch={config.arch} needs prefix_len_B (each row's prompt length) to decode")
            mask_fn = lambda q, k: mask_lib.prefix_lm(q, k, prefix_len_B)
        else:
            mask_fn = lambda q, k: _causal_mask(config, q, k)[0]
        inputs, plan, positions_BxC = _extend_inputs(cache, positions_BxT, valid_BxT, fresh, mask_fn,
                                                     self.position_bias, config.attention.pattern == "sliding_window")
        return self._extend_stack(self.blocks, self.final_norm, tokens_BxT, positions_BxT, inputs, plan, cache,
                                  positions_BxC, logits_at_B, layers)

    @property
    def decoding_stack(self) -> nnx.Module:
        """The stacked layers that decoding runs (kv_cache.unstack_layers slices them)."""
        return self.blocks

    def start_decoding(self, tokens_BxP, lengths_B, capacity: int, *, layers=None, encoder_tokens_BxS=None,
                       encoder_valid_BxS=None):
        """Prefill right-padded prompts into a new cache: (logits after each prompt [B, 1, V], cache).
        The prompt is each row's prefix for a prefix-LM. `layers` (unstack_layers) selects per-layer caches."""
        del encoder_tokens_BxS, encoder_valid_BxS  # no encoder
        B, P = tokens_BxP.shape
        positions = mask_lib.default_positions(B, P)
        cache = init_cache(self.config, B, capacity, per_layer=layers is not None)
        return self.extend(tokens_BxP, positions, cache, valid_BxT=positions < lengths_B[:, None], fresh=True,
                           logits_at_B=lengths_B - 1, layers=layers, prefix_len_B=lengths_B)

    def sentence_embedding(self, tokens_BxL, valid_BxL=None, pooling: str | None = None):
        """[B, D] float32: the mean of the final states over real tokens, or the first token's state."""
        h = self.hidden_states(tokens_BxL, valid_BxL=valid_BxL).astype(jnp.float32)
        valid_BxL = jnp.ones(tokens_BxL.shape, bool) if valid_BxL is None else valid_BxL
        return POOLINGS[pooling or self.config.pooling](h, valid_BxL)


def _mean_pool(h_BxLxD, valid_BxL):
    weights = valid_BxL.astype(jnp.float32)
    return (h_BxLxD * weights[..., None]).sum(1) / jnp.maximum(weights.sum(1, keepdims=True), 1.0)


# model.pooling -> (final states [B, L, D] float32, valid [B, L]) -> sentence embedding [B, D]
POOLINGS = registry.POOLINGS.register_all({"mean": _mean_pool, "first": lambda h_BxLxD, valid_BxL: h_BxLxD[:, 0]})


class EncoderDecoder(_Embedding):
    """T5-style encoder-decoder with a shared embedding; `__call__` returns decoder logits."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self._init_embedding(config, rngs)
        n_enc, n_dec = config.resolved_encoder_layers, config.n_layers
        self.encoder = make_stack(config, n_enc, pattern="A",
                                  deepnorm=deepnorm_constants("encoder_decoder", n_enc, n_dec, "encoder"), rngs=rngs)
        self.decoder = make_stack(config, n_dec, cross=True, pattern="A",
                                  deepnorm=deepnorm_constants("encoder_decoder", n_enc, n_dec, "decoder"), rngs=rngs)
        self.encoder_norm = _final_norm(config, rngs)
        self.decoder_norm = _final_norm(config, rngs)
        relative = config.position.kind in ("alibi", "t5")
        self.encoder_bias = PositionBias(config, bidirectional=True, rngs=rngs) if relative else None
        self.decoder_bias = PositionBias(config, bidirectional=False, rngs=rngs) if relative else None

    def encode(self, tokens_BxS, valid_BxS=None):
        B, S = tokens_BxS.shape
        positions = mask_lib.default_positions(B, S)
        mask = None if valid_BxS is None else mask_lib.padding(valid_BxS)
        bias = self.encoder_bias(positions, positions) if self.encoder_bias is not None else None
        inputs = LayerInputs(positions=positions, mask=mask, bias=bias, causal=False,
                             mask_kind=MaskKind.BIDIRECTIONAL if mask is None else MaskKind.DYNAMIC)
        h = run_stack(self.config, self.encoder, self._embed_tokens(tokens_BxS, positions), inputs)
        return self.encoder_norm(h) if self.encoder_norm is not None else h

    def decode(self, decoder_tokens_BxL, encoder_states_BxSxD, encoder_valid_BxS=None):
        B, L = decoder_tokens_BxL.shape
        positions = mask_lib.default_positions(B, L)
        bias = self.decoder_bias(positions, positions) if self.decoder_bias is not None else None
        context_mask = None if encoder_valid_BxS is None else mask_lib.padding(encoder_valid_BxS)
        inputs = LayerInputs(positions=positions, mask=mask_lib.causal(positions, positions), bias=bias,
                             causal=True, mask_kind=MaskKind.CAUSAL, context=encoder_states_BxSxD,
                             context_mask=context_mask)
        h = run_stack(self.config, self.decoder, self._embed_tokens(decoder_tokens_BxL, positions), inputs)
        h = self.decoder_norm(h) if self.decoder_norm is not None else h
        return self._logits(h)

    def extend(self, tokens_BxT, positions_BxT, cache: DecodeCache, *, valid_BxT=None, fresh: bool = False,
               encoder_states_BxSxD=None, logits_at_B=None, layers: list | None = None, prefix_len_B=None):
        """Incremental decoder forward (see Transformer.extend). With `fresh`, `encoder_states_BxSxD`
        (from `encode`) are projected into every layer's cross-attention cache once; the encoder
        padding comes from `cache.context_valid_BxS`. (`prefix_len_B` is accepted like Transformer.extend's
        and unused: the decoder is causal.)"""
        del prefix_len_B
        if fresh and encoder_states_BxSxD is None:
            raise ValueError("the first (fresh) extend of an encoder-decoder needs encoder_states_BxSxD")
        context_mask = mask_lib.padding(cache.context_valid_BxS)
        inputs, plan, positions_BxC = _extend_inputs(cache, positions_BxT, valid_BxT, fresh, mask_lib.causal,
                                                     self.decoder_bias, False, context=encoder_states_BxSxD,
                                                     context_mask=context_mask)
        return self._extend_stack(self.decoder, self.decoder_norm, tokens_BxT, positions_BxT, inputs, plan, cache,
                                  positions_BxC, logits_at_B, layers)

    @property
    def decoding_stack(self) -> nnx.Module:
        return self.decoder

    def start_decoding(self, tokens_BxP, lengths_B, capacity: int, *, layers=None, encoder_tokens_BxS=None,
                       encoder_valid_BxS=None):
        """Encode the prompts once and prefill the decoder start `tokens_BxP` (see Transformer.start_decoding);
        every layer's cross-attention keys/values of the encoder states go into the cache."""
        B, P = tokens_BxP.shape
        positions = mask_lib.default_positions(B, P)
        states = self.encode(encoder_tokens_BxS, encoder_valid_BxS)
        cache = init_cache(self.config, B, capacity, context_len=encoder_tokens_BxS.shape[1],
                           per_layer=layers is not None)
        cache = dataclasses.replace(cache, context_valid_BxS=encoder_valid_BxS)
        return self.extend(tokens_BxP, positions, cache, valid_BxT=positions < lengths_B[:, None], fresh=True,
                           encoder_states_BxSxD=states, logits_at_B=lengths_B - 1, layers=layers)

    def __call__(self, encoder_tokens_BxS, decoder_tokens_BxL, encoder_valid_BxS=None):
        return self.decode(decoder_tokens_BxL, self.encode(encoder_tokens_BxS, encoder_valid_BxS), encoder_valid_BxS)

