"""How each architecture reads a batch: `FORWARDS[arch](model, batch, config) -> (logits, targets, loss_mask)`.

decoder          model(inputs); with data.document_mask the packed documents are kept apart (segment
                 ids) and positions restart at each document
prefix_lm        model(inputs, prefix_len_B=prefix_len); loss only on suffix predictions (objective);
                 positions count across the window (the prefix is a window prefix), document_mask
                 keeps documents apart
encoder          model(inputs, valid_BxL=segment_ids > 0) with masked-LM targets/loss mask (objective);
                 document_mask as for the decoder
encoder_decoder  model(encoder_inputs, decoder_inputs, encoder_valid) against decoder_targets
"""

from __future__ import annotations

from lmx.config import Config


def _decoder(model, batch, config: Config):
    if config.data.document_mask:
        logits = model(batch["inputs"], batch["positions"], batch["segment_ids"])
    else:
        logits = model(batch["inputs"])
    return logits, batch["targets"], batch["loss_mask"]


def _prefix_lm(model, batch, config: Config):
    segments = batch["segment_ids"] if config.data.document_mask else None
    logits = model(batch["inputs"], None, segments, prefix_len_B=batch["prefix_len"])
    return logits, batch["targets"], batch["loss_mask"]


def _encoder(model, batch, config: Config):
    if config.data.document_mask:
        logits = model(batch["inputs"], batch["positions"], batch["segment_ids"], valid_BxL=batch["segment_ids"] > 0)
    else:
        logits = model(batch["inputs"], valid_BxL=batch["segment_ids"] > 0)
    return logits, batch["targets"], batch["loss_mask"]


def _encoder_decoder(model, batch, config: Config):
    logits = model(batch["encoder_inputs"], batch["decoder_inputs"], batch["encoder_valid"] > 0)
    return logits, batch["decoder_targets"], batch["decoder_loss_mask"]


FORWARDS = {"decoder": _decoder, "prefix_lm": _prefix_lm, "encoder": _encoder, "encoder_decoder": _encoder_decoder}


def forward(model, batch: dict, config: Config):
    return FORWARDS[config.model.arch](model, batch, config)
