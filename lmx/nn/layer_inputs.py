"""What every layer of a stack sees besides the residual stream, built once per forward.

`LayerInputs` is the same for training, evaluation and decoding: positions, the mask (or what to
build it from), an additive logit bias, and the encoder states for cross-attention. What only
decoding needs travels with the cache: `LayerCache(state, plan)` gives a layer its own state and
the call's `WritePlan` (where the new keys go; lmx.nn.kv_cache builds both).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import jax

from lmx.nn import masks as mask_lib


class MaskKind(str, enum.Enum):
    """What a kernel may assume about the mask (lmx.nn.attention_kernels): a static causal,
    sliding-window or full mask, or a per-example (dynamic) one that only a dense mask describes."""

    CAUSAL = "causal"
    SLIDING_WINDOW = "sliding_window"
    BIDIRECTIONAL = "bidirectional"
    DYNAMIC = "dynamic"


@dataclasses.dataclass
class LayerInputs:
    positions: jax.Array  # [B, L] positions of the queries (the call's tokens)
    segment_ids: jax.Array | None = None  # [B, L] packed documents: attention stays inside a segment
    mask: jax.Array | None = None  # bool, broadcastable to [B, N, L, S]; None: causal/full from `causal`
    bias: jax.Array | None = None  # additive logits [B|1, N, L, S] (ALiBi, T5)
    causal: bool = True
    mask_kind: MaskKind | None = None
    window: int = 0  # sliding window of a static sliding-window mask (kernel hint)
    valid: jax.Array | None = None  # [B, L] real (non-padding) tokens; linear attention and SSMs drop the others
    context: jax.Array | None = None  # [B, S, D] encoder states for cross-attention
    context_mask: jax.Array | None = None  # bool mask over the encoder states
    context_positions: jax.Array | None = None  # [B, S]; default 0..S-1

    def __post_init__(self):
        if self.mask_kind is not None:
            self.mask_kind = MaskKind(self.mask_kind)

    @classmethod
    def standalone(cls, x_BxLxD, positions_BxL=None, segment_ids_BxL=None, *, mask=None, bias=None,
                   causal: bool = True, mask_kind=None, window: int = 0, valid=None, context=None,
                   context_positions=None) -> LayerInputs:
        """The inputs of a layer called on its own: positions default to 0..L-1, the encoder states'
        positions to 0..S-1, and a given mask without a kind is taken as dynamic."""
        B, L = x_BxLxD.shape[:2]
        if positions_BxL is None:
            positions_BxL = mask_lib.default_positions(B, L)
        if context is not None and context_positions is None:
            context_positions = mask_lib.default_positions(B, context.shape[1])
        if mask is not None and mask_kind is None:
            mask_kind = MaskKind.DYNAMIC
        return cls(positions=positions_BxL, segment_ids=segment_ids_BxL, mask=mask, bias=bias, causal=causal,
                   mask_kind=mask_kind, window=window, valid=valid, context=context, context_mask=mask if context
                   is not None else None, context_positions=context_positions)


@dataclasses.dataclass(frozen=True)
class WritePlan:
    """Where one call's T new tokens go, shared by every layer of the call.

    slots_BxT      the cache slot of each new token (== capacity: not written)
    k_positions    positions of the keys the new tokens attend to, matching the mask's key axis
    fresh          the cache starts empty (a prompt's prefill): attend to the new tokens only
    write_first    write the new keys first, then attend to the cache alone (per-layer buffers
                   updated in place); otherwise attend to [cache, new tokens], then write
    """

    slots_BxT: jax.Array
    k_positions: jax.Array
    fresh: bool
    write_first: bool


@dataclasses.dataclass(frozen=True)
class LayerCache:
    """What a layer (or a mixer) is called with when decoding: its state and the call's write plan."""

    state: Any
    plan: WritePlan

    def part(self, name: str) -> LayerCache:
        return LayerCache(self.state[name], self.plan)
