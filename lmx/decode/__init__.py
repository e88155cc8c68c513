"""Decoding: KV-cached generation, sampling, beam search, speculative decoding, and text helpers.

    lmx.decode.generate(model, tokenizer, prompts, max_new_tokens=..., temperature=..., stop=[...])
    lmx.decode.generate_tokens(model, prompt_ids, max_new_tokens=..., sampling=SamplingConfig(...))
See docs/decoding.md.
"""

from lmx.decode.beam import Hypothesis, beam_search
from lmx.decode.engine import GenerationOutput, generate_tokens
from lmx.decode.logits import SamplingConfig, process_logits, sample_token, warp_logits
from lmx.decode.speculative import speculative_generate
from lmx.decode.stopping import TextStream, cut_at_stop
from lmx.decode.text import Completion, Vote, best_of_n, generate, self_consistency

__all__ = [
    "Completion", "GenerationOutput", "Hypothesis", "SamplingConfig", "TextStream", "Vote", "beam_search",
    "best_of_n", "cut_at_stop", "generate", "generate_tokens", "process_logits", "sample_token",
    "self_consistency", "speculative_generate", "warp_logits",
]
