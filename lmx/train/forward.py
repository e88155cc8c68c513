"""The training forward of a batch: the architecture's record says how it reads the batch
(lmx.nn.architectures: `forward(model, batch, document_mask) -> (logits, targets, loss_mask)`)."""

from __future__ import annotations

from lmx.config import Config


def forward(model, batch: dict, config: Config):
    return config.model.architecture.forward(model, batch, config.data.document_mask)
