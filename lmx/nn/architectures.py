"""Architectures as records: everything lmx needs to know about a `model.arch`, in one place.

Each `Architecture` names its model class, its training objective (lmx.data.objectives), how a
training batch is fed to the model, whether it decodes token by token, which stacks it has (for
parameter and FLOP accounting) and the settings it refuses. Training, decoding, data preparation,
accounting and `lmx info` read the record (`config.architecture`) instead of comparing the arch
string; adding an architecture is one record here.

    decoder          causal LM: model(inputs); with data.document_mask packed documents are kept
                     apart (segment ids) and positions restart at each document
    prefix_lm        model(inputs, prefix_len_B=prefix_len): bidirectional over each example's prefix,
                     loss on the suffix only; positions count across the window
    encoder          model(inputs, valid_BxL=segment_ids > 0) against masked-LM targets
    encoder_decoder  model(encoder_inputs, decoder_inputs, encoder_valid) against decoder targets
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from lmx import registry
from lmx.config import DataConfig, ModelConfig
from lmx.errors import ConfigError
from lmx.nn.transformer import EncoderDecoder, Transformer


def _refuse(field: str, message: str) -> None:
    raise ConfigError(f"{field}: {message}")


def _causal_decoder_forward(model, batch: dict, document_mask: bool):
    if document_mask:
        logits = model(batch["inputs"], batch["positions"], batch["segment_ids"])
    else:
        logits = model(batch["inputs"])
    return logits, batch["targets"], batch["loss_mask"]


def _prefix_lm_forward(model, batch: dict, document_mask: bool):
    segments = batch["segment_ids"] if document_mask else None
    logits = model(batch["inputs"], None, segments, prefix_len_B=batch["prefix_len"])
    return logits, batch["targets"], batch["loss_mask"]


def _encoder_forward(model, batch: dict, document_mask: bool):
    valid = batch["segment_ids"] > 0
    if document_mask:
        logits = model(batch["inputs"], batch["positions"], batch["segment_ids"], valid_BxL=valid)
    else:
        logits = model(batch["inputs"], valid_BxL=valid)
    return logits, batch["targets"], batch["loss_mask"]


def _encoder_decoder_forward(model, batch: dict, document_mask: bool):
    del document_mask  # refused for this architecture (check_data)
    logits = model(batch["encoder_inputs"], batch["decoder_inputs"], batch["encoder_valid"] > 0)
    return logits, batch["decoder_targets"], batch["decoder_loss_mask"]


def _no_data_requirements(model: ModelConfig, data: DataConfig) -> None:
    del model, data


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One `model.arch`. `forward(model, batch, document_mask) -> (logits, targets, loss_mask)`."""

    name: str
    model_class: type
    objective: str  # lmx.data.objectives name applied per example in the input pipeline
    causal: bool  # the (decoder) stack attends only backwards: it can decode token by token
    forward: Callable
    bidirectional_bias: bool = False  # relative-position biases see both directions (encoders)
    has_cross_attention: bool = False
    hybrid_layers: bool = False  # accepts selective-SSM (M) layers in model.layer_pattern
    patterns: tuple[str, ...] = ("dense",)  # model.attention.pattern values it combines with
    linear_attention: bool = True  # accepts model.attention.kind=linear
    prefix: bool = False  # attention is bidirectional over each example's prefix (prefix_len_B)
    check_data_fn: Callable[[ModelConfig, DataConfig], None] = _no_data_requirements

    @property
    def plain_decoder(self) -> bool:
        """A causal LM over the tokens alone: no prefix mask, no encoder."""
        return self.causal and not self.prefix and not self.has_cross_attention

    def stacks(self, config: ModelConfig) -> list[tuple[int, str, bool]]:
        """(layers, layer pattern, cross-attention) of every stack, encoder first."""
        if self.has_cross_attention:
            return [(config.resolved_encoder_layers, "A", False), (config.n_layers, "A", True)]
        return [(config.n_layers, config.layer_pattern, False)]

    def build(self, config: ModelConfig, *, rngs):
        return self.model_class(config, rngs=rngs)

    def check_model(self, config: ModelConfig) -> None:
        """Refuse model settings this architecture cannot run (called by ModelConfig validation)."""
        if "M" in config.layer_pattern and not self.hybrid_layers:
            _refuse("model.layer_pattern", f"selective SSM layers (M) are causal; model.arch={self.name} needs "
                    "attention-only layers")
        if config.attention.pattern not in self.patterns:
            reason = "prefix mask" if self.name == "prefix_lm" else "dense encoder"
            _refuse("model.attention.pattern", f"attention.pattern={config.attention.pattern} is not combined "
                    f"with arch={self.name}'s {reason}; use {' or '.join(self.patterns)}")
        if config.attention.kind == "linear" and not self.linear_attention:
            _refuse("model.arch", f"arch={self.name} needs masks that attention.kind=linear does not support")

    def check_data(self, model: ModelConfig, data: DataConfig) -> None:
        """Refuse data settings this architecture's objective cannot use (called by Config validation)."""
        self.check_data_fn(model, data)


def _encoder_data(model: ModelConfig, data: DataConfig) -> None:
    if "<|mask|>" not in data.special_tokens:
        _refuse("data.special_tokens", "model.arch=encoder (masked LM) needs a <|mask|> token: add it to "
                "data.special_tokens")
    if data.document_mask and model.attention.kind != "softmax":
        _refuse("data.document_mask", f"bidirectional linear attention (model.attention.kind={model.attention.kind}, "
                "arch=encoder) cannot keep packed documents apart")


def _encoder_decoder_data(model: ModelConfig, data: DataConfig) -> None:
    del model
    if data.num_sentinels <= 0:
        _refuse("data.num_sentinels", "model.arch=encoder_decoder (span corruption) needs sentinel tokens: set "
                "data.num_sentinels")
    if data.document_mask:
        _refuse("data.document_mask", "model.arch=encoder_decoder builds its own sequences by span corruption; "
                "data.document_mask does not apply")


def _prefix_lm_data(model: ModelConfig, data: DataConfig) -> None:
    del model
    if data.seq_len < 2:
        _refuse("data.seq_len", "model.arch=prefix_lm needs data.seq_len >= 2 (prefix + suffix)")


ARCHITECTURES = registry.ARCHITECTURES.register_all({
    "decoder": Architecture("decoder", Transformer, "causal_lm", causal=True, forward=_causal_decoder_forward,
                            hybrid_layers=True, patterns=("dense", "sliding_window", "block_sparse")),
    "prefix_lm": Architecture("prefix_lm", Transformer, "prefix_lm", causal=True, forward=_prefix_lm_forward,
                              linear_attention=False, prefix=True, check_data_fn=_prefix_lm_data),
    "encoder": Architecture("encoder", Transformer, "mlm", causal=False, forward=_encoder_forward,
                            bidirectional_bias=True, check_data_fn=_encoder_data),
    "encoder_decoder": Architecture("encoder_decoder", EncoderDecoder, "span_corruption", causal=True,
                                    forward=_encoder_decoder_forward, has_cross_attention=True,
                                    linear_attention=False, check_data_fn=_encoder_decoder_data),
})


def build_model(config: ModelConfig, *, rngs) -> object:
    """The model of `config.arch` (its record's class), initialised from `rngs`."""
    return config.architecture.build(config, rngs=rngs)
