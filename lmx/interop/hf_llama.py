"""Export a Llama-shaped lmx decoder to Hugging Face `LlamaForCausalLM`, and import one back.

A model is Llama-shaped (`check_llama_compatible`) when model.arch=decoder, position=rope with
rope_layout=half and rope_fraction=1, norm=rmsnorm, norm_position=pre, ffn=swiglu, qk_norm off,
logit_soft_cap=0, scale_embeddings off, layer_pattern=A, attention_kind=softmax and
attention_pattern=dense (causal). Any n_kv_heads (GQA), head_dim, tied or untied embeddings.

Parameter mapping (lmx layers are stacked on a leading `layers` axis; entry i is HF layer i;
D = d_model, N = n_heads, K = n_kv_heads, H = head_dim, F = d_ff, V = vocab_size; HF Linear weights
are [out, in], so every lmx [in.., out..] matrix is flattened and transposed):

    lmx                              shape       HF (float32)                                     shape
    embed                            [V, D]      model.embed_tokens.weight                        [V, D]
    blocks.mixer_norm.scale[i]       [D]         model.layers.{i}.input_layernorm.weight          [D]
    blocks.mixer.query[i]            [D, N, H]   model.layers.{i}.self_attn.q_proj.weight         [N*H, D]
    blocks.mixer.key[i]              [D, K, H]   model.layers.{i}.self_attn.k_proj.weight         [K*H, D]
    blocks.mixer.value[i]            [D, K, H]   model.layers.{i}.self_attn.v_proj.weight         [K*H, D]
    blocks.mixer.out[i]              [N, H, D]   model.layers.{i}.self_attn.o_proj.weight         [D, N*H]
    blocks.ffn_norm.scale[i]         [D]         model.layers.{i}.post_attention_layernorm.weight [D]
    blocks.ffn.gate[i]               [D, F]      model.layers.{i}.mlp.gate_proj.weight            [F, D]
    blocks.ffn.up[i]                 [D, F]      model.layers.{i}.mlp.up_proj.weight              [F, D]
    blocks.ffn.down[i]               [F, D]      model.layers.{i}.mlp.down_proj.weight            [D, F]
    final_norm.scale                 [D]         model.norm.weight                                [D]
    unembed (untied only)            [D, V]      lm_head.weight (tied: shares embed_tokens)       [V, D]

Heads are head-major in both (HF views q_proj's output as [N, H]), query head n reads kv head
n // (N/K) in both, and both use the half-split RoPE layout with theta_i = base^(-2i/H), so no
permutation of q/k features is needed (tests/interop/test_hf_llama.py checks logits agree).
Config: d_model->hidden_size, d_ff->intermediate_size, n_layers->num_hidden_layers,
n_heads->num_attention_heads, n_kv_heads->num_key_value_heads, head_dim, norm_eps->rms_norm_eps,
rope_theta->rope_parameters["rope_theta"] (transformers 5; `rope_theta` before), max_seq_len->
max_position_embeddings, tie_embeddings->tie_word_embeddings; no attention or MLP biases.
Token ids (bos/eos/pad) are not part of a ModelConfig: they are left unset, pass them as keyword
arguments to `to_hf_llama_config` / `to_hf_llama`.

torch and transformers are imported inside the functions: lmx imports without them.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmx.config import ModelConfig
from lmx.errors import ConfigError
from lmx.nn.architectures import build_model

# (field, required value) of a Llama-shaped ModelConfig, checked in this order.
LLAMA_SETTINGS = (  # dotted keys under model.
    ("arch", "decoder"), ("position.kind", "rope"), ("position.rope.layout", "half"), ("position.rope.fraction", 1.0),
    ("norm.kind", "rmsnorm"), ("norm.placement", "pre"), ("ffn.activation", "swiglu"), ("attention.qk_norm", False),
    ("logit_soft_cap", 0.0), ("scale_embeddings", False), ("layer_pattern", "A"),
    ("attention.kind", "softmax"), ("attention.pattern", "dense"), ("rope_scaling", None),
)


def _get(config: ModelConfig, dotted: str):
    value = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def check_llama_compatible(config: ModelConfig) -> None:
    """Raise ConfigError naming the first setting that a Hugging Face Llama cannot express."""
    for field, required in LLAMA_SETTINGS:
        value = _get(config, field)
        if value != required:
            raise ConfigError(f"model.{field}: {field}={value!r} has no Hugging Face Llama equivalent; "
                              f"Llama interop needs {field}={required!r}")


def to_hf_llama_config(config: ModelConfig, **hf_kwargs: Any):
    """The `transformers.LlamaConfig` of a Llama-shaped lmx config; `hf_kwargs` are added (token ids...)."""
    from transformers import LlamaConfig  # optional dependency, heavy: `import lmx.interop` works without it

    check_llama_compatible(config)
    kwargs = dict(
        vocab_size=config.vocab_size, hidden_size=config.d_model, intermediate_size=config.resolved_d_ff,
        num_hidden_layers=config.n_layers, num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_kv_heads, head_dim=config.resolved_head_dim, hidden_act="silu",
        rms_norm_eps=config.norm.eps, max_position_embeddings=config.max_seq_len,
        tie_word_embeddings=config.tie_embeddings, attention_bias=False, mlp_bias=False,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )
    if "rope_parameters" in LlamaConfig().to_dict():  # transformers >= 5
        kwargs["rope_parameters"] = {"rope_type": "default", "rope_theta": float(config.position.rope.theta)}
    else:
        kwargs["rope_theta"] = float(config.position.rope.theta)
    kwargs.update(hf_kwargs)
    return LlamaConfig(**kwargs)


def _hf_rope_theta(hf_config) -> float:
    params = getattr(hf_config, "rope_parameters", None) or {}
    scaling = getattr(hf_config, "rope_scaling", None) or {}
    rope_type = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if rope_type != "default":
        raise ConfigError(f"model.rope_scaling: the Hugging Face model uses RoPE scaling {rope_type!r}, "
                          "which lmx does not implement")
    theta = params.get("rope_theta", getattr(hf_config, "rope_theta", None))
    return float(10000.0 if theta is None else theta)


def from_hf_llama_config(hf_config, **overrides: Any) -> ModelConfig:
    """The lmx ModelConfig of a `transformers.LlamaConfig`; `overrides` are ModelConfig keys
    (dotted or with `__`, as in `ModelConfig.replace`)."""
    for name, required in (("hidden_act", "silu"), ("attention_bias", False), ("mlp_bias", False)):
        value = getattr(hf_config, name, required)
        if value != required:
            raise ConfigError(f"{name}: the Hugging Face model has {name}={value!r}; lmx needs {required!r}")
    n_heads, d_model = hf_config.num_attention_heads, hf_config.hidden_size
    head_dim = getattr(hf_config, "head_dim", None) or d_model // n_heads
    fields = dict(
        arch="decoder", d_model=d_model, n_layers=hf_config.num_hidden_layers, n_heads=n_heads,
        n_kv_heads=hf_config.num_key_value_heads or n_heads,
        head_dim=0 if head_dim * n_heads == d_model else head_dim,
        d_ff=hf_config.intermediate_size, vocab_size=hf_config.vocab_size,
        max_seq_len=hf_config.max_position_embeddings, tie_embeddings=bool(hf_config.tie_word_embeddings),
    )
    config = ModelConfig(**fields).replace(**{
        "position.kind": "rope", "position.rope.theta": _hf_rope_theta(hf_config), "position.rope.layout": "half",
        "position.rope.fraction": 1.0, "ffn.activation": "swiglu", "norm.kind": "rmsnorm",
        "norm.eps": float(hf_config.rms_norm_eps), "norm.placement": "pre"}).replace(**overrides)
    check_llama_compatible(config)
    return config


def _layer_names(i: int) -> dict[tuple[str, ...], str]:
    """lmx parameter path (under blocks, without the layer index) -> HF name of layer i."""
    p = f"model.layers.{i}."
    return {("mixer_norm", "scale"): p + "input_layernorm.weight", ("mixer", "query"): p + "self_attn.q_proj.weight",
            ("mixer", "key"): p + "self_attn.k_proj.weight", ("mixer", "value"): p + "self_attn.v_proj.weight",
            ("mixer", "out"): p + "self_attn.o_proj.weight", ("ffn_norm", "scale"): p + "post_attention_layernorm.weight",
            ("ffn", "gate"): p + "mlp.gate_proj.weight", ("ffn", "up"): p + "mlp.up_proj.weight",
            ("ffn", "down"): p + "mlp.down_proj.weight"}


def _to_hf_matrix(key: tuple[str, ...], w: np.ndarray) -> np.ndarray:
    """One layer's lmx array -> the HF [out, in] weight (norm scales pass through)."""
    if key[1] in ("query", "key", "value"):  # [D, heads, H] -> [heads*H, D]
        return w.reshape(w.shape[0], -1).T
    if key[1] == "out":  # [N, H, D] -> [D, N*H]
        return w.reshape(-1, w.shape[-1]).T
    if key[0] == "ffn":  # [D, F] / [F, D] -> transposed
        return w.T
    return w


def _from_hf_matrix(key: tuple[str, ...], w: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of `_to_hf_matrix`: an HF weight -> one layer's lmx array of `shape`."""
    if key[1] in ("query", "key", "value", "out") or key[0] == "ffn":
        w = w.T
    if w.size != int(np.prod(shape)):
        raise ConfigError(f"{'.'.join(key)}: Hugging Face weight of {w.size} values does not fit lmx shape {shape}")
    return w.reshape(shape)


def _param_arrays(model) -> dict[tuple[str, ...], np.ndarray]:
    return {tuple(str(k) for k in path): np.asarray(jnp.asarray(var.get_value(), jnp.float32))
            for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def to_hf_state_dict(model) -> dict:
    """HF LlamaForCausalLM state dict (float32 torch tensors) of a Llama-shaped lmx Transformer.
    Tied models have no `lm_head.weight` entry (HF ties it to `model.embed_tokens.weight`)."""
    import torch  # optional dependency, heavy: imported only to build torch tensors

    config: ModelConfig = model.config
    check_llama_compatible(config)
    params = _param_arrays(model)
    out = {"model.embed_tokens.weight": params[("embed",)], "model.norm.weight": params[("final_norm", "scale")]}
    if not config.tie_embeddings:
        out["lm_head.weight"] = params[("unembed",)].T
    for i in range(config.n_layers):
        for key, name in _layer_names(i).items():
            out[name] = _to_hf_matrix(key, params[("blocks",) + key][i])
    return {name: torch.from_numpy(np.array(w, dtype=np.float32, order="C")) for name, w in out.items()}


def to_hf_llama(model, **hf_kwargs: Any):
    """A float32 `transformers.LlamaForCausalLM` in eval mode with `model`'s weights."""
    import torch  # optional dependencies, heavy: imported only to build the HF model
    from transformers import LlamaForCausalLM

    hf_config = to_hf_llama_config(model.config, **hf_kwargs)
    with torch.device("cpu"):
        hf_model = LlamaForCausalLM(hf_config).to(torch.float32)
    state = to_hf_state_dict(model)
    missing, unexpected = hf_model.load_state_dict(state, strict=False)
    allowed_missing = {"lm_head.weight"} if model.config.tie_embeddings else set()
    if set(missing) - allowed_missing or unexpected:
        raise RuntimeError(f"HF Llama state dict mismatch: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
    if model.config.tie_embeddings and hf_model.lm_head.weight.data_ptr() != hf_model.model.embed_tokens.weight.data_ptr():
        hf_model.lm_head.weight = hf_model.model.embed_tokens.weight
    return hf_model.eval()


def from_hf_llama(hf_model, **overrides: Any):
    """(ModelConfig, lmx Transformer) from a `transformers.LlamaForCausalLM` (or anything with `.config`
    and `.state_dict()` in its layout); `overrides` as in `from_hf_llama_config`
    (attention__kernel, dtypes, ...)."""
    config = from_hf_llama_config(hf_model.config, **overrides)
    hf = {name: t.detach().to("cpu").float().numpy() for name, t in hf_model.state_dict().items()}
    # Built abstractly (shapes only, no random init): every parameter is overwritten below.
    model = nnx.eval_shape(lambda: build_model(config, rngs=nnx.Rngs(0)))
    state = nnx.state(model, nnx.Param)
    for path, var in nnx.to_flat_state(state):
        key = tuple(str(k) for k in path)
        shape = tuple(var.get_value().shape)
        if key == ("embed",):
            value = hf["model.embed_tokens.weight"]
        elif key == ("final_norm", "scale"):
            value = hf["model.norm.weight"]
        elif key == ("unembed",):
            value = hf["lm_head.weight"].T
        elif key[0] == "blocks":
            value = np.stack([_from_hf_matrix(key[1:], hf[_layer_names(i)[key[1:]]], shape[1:])
                              for i in range(config.n_layers)])
        else:
            raise ConfigError(f"{'.'.join(key)}: lmx parameter with no Hugging Face Llama counterpart")
        if tuple(value.shape) != shape:
            raise ConfigError(f"{'.'.join(key)}: Hugging Face shape {value.shape} != lmx shape {shape}")
        var.set_value(jnp.asarray(value, var.get_value().dtype))
    nnx.update(model, state)
    abstract = [path for path, var in nnx.to_flat_state(nnx.state(model))
                if isinstance(var.get_value(), jax.ShapeDtypeStruct)]
    if abstract:
        raise RuntimeError(f"lmx state left without values by the Llama import: {abstract}")
    return config, model


__all__ = ["check_llama_compatible", "to_hf_llama_config", "from_hf_llama_config", "to_hf_state_dict",
           "to_hf_llama", "from_hf_llama"]
