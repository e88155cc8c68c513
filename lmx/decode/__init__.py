"""Decoding. This version has greedy decoding over a fixed-length buffer (no KV cache yet)."""

from lmx.decode.greedy import greedy_generate

__all__ = ["greedy_generate"]
