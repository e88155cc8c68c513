"""Evaluation: held-out loss, perplexity and bits per byte."""

from lmx.eval.perplexity import evaluate, summarize_eval_sums

__all__ = ["evaluate", "summarize_eval_sums"]
