"""Stop strings on decoded text, across token boundaries, and incremental detokenisation for streaming.

A stop string can span several tokens and can only be recognised on the decoded text. Generation
stops as soon as a stop string has been completed, so the match that counts is the one that ENDS
first in the text (ties: the one that starts first); the output is the text cut just before it.
This is what a streaming decoder can decide without looking ahead (as in vLLM, or Hugging Face
transformers' StopStringCriteria, which stop on the first completed stop string). It differs from
"the leftmost start" only when one stop string's match ends strictly inside another's, e.g. stops
("<end>", "end") on "x<end>" cut at "x<" because "end" is complete before "<end>" is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lmx.errors import ConfigError

REPLACEMENT_CHAR = "\ufffd"


def validate_stops(stops: Sequence[str]) -> tuple[str, ...]:
    """Return `stops` as a tuple; ConfigError if it is a single string or holds an empty or non-string entry."""
    if isinstance(stops, str):
        raise ConfigError(f"stop strings must be a list of strings, not a single string ({stops!r})")
    stops = tuple(stops)
    for stop in stops:
        if not isinstance(stop, str):
            raise ConfigError(f"stop strings must be strings, got {stop!r}")
        if not stop:
            raise ConfigError("stop strings must be non-empty")
    return stops


def _first_completed_stop(text: str, stops: Sequence[str], start: int = 0) -> tuple[int, str] | None:
    """(start index, stop) of the stop match in text[start:] that ends first (ties: starts first)."""
    best = None  # (end, begin, stop)
    for stop in stops:
        begin = text.find(stop, start)
        if begin >= 0:
            candidate = (begin + len(stop), begin, stop)
            if best is None or candidate[:2] < best[:2]:
                best = candidate
    return None if best is None else (best[1], best[2])


def find_stop(text: str, stops: Sequence[str]) -> int | None:
    """Index at which the first completed stop string starts in `text` (module docstring), None if none."""
    found = _first_completed_stop(text, validate_stops(stops))
    return None if found is None else found[0]


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, str | None]:
    """(text cut exactly before the first completed stop string, that stop string); (text, None) if none."""
    found = _first_completed_stop(text, validate_stops(stops))
    return (text, None) if found is None else (text[: found[0]], found[1])


def _held_suffix_length(text: str, stops: Sequence[str], start: int) -> int:
    """Length of the longest suffix of text[start:] that is a proper prefix of some stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text) - start), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


class TextStream:
    """Incremental detokenisation with stop strings, for streaming output.

    `push(token_id)` decodes the whole token list so far (simple and exact for byte-level BPE) and
    returns only the new text that is safe to emit: it holds back trailing U+FFFD characters (an
    incomplete UTF-8 sequence) and any suffix that is a proper prefix of a stop string. When a stop
    string is completed, it emits the text before it and sets `stopped` and `stop_string`; the token
    `eos_id` sets `stopped` without emitting anything. After stopping, `push` returns "". `finish()`
    returns the held-back text (nothing after a stop string). The concatenation of everything returned
    equals `cut_at_stop(decode(tokens before eos), stops)[0]`; `text` is that concatenation so far.
    """

    def __init__(
        self, decode: Callable[[list[int]], str], stops: Sequence[str] = (), eos_id: int | None = None
    ):
        self._decode = decode
        self._stops = validate_stops(stops)
        self._eos_id = eos_id
        self._token_ids: list[int] = []
        self._finished = False
        self.text = ""
        self.stopped = False
        self.stop_string: str | None = None

    @property
    def token_ids(self) -> list[int]:
        """The tokens pushed before the stream stopped (eos excluded)."""
        return list(self._token_ids)

    def _emit_up_to(self, target: str) -> str:
        new = target[len(self.text) :]
        self.text = target
        return new

    def push(self, token_id: int) -> str:
        """Add one token; return the newly safe text ("" once stopped)."""
        if self.stopped or self._finished:
            return ""
        if self._eos_id is not None and token_id == self._eos_id:
            self.stopped = True
            return ""
        self._token_ids.append(token_id)
        stable = self._decode(self._token_ids).rstrip(REPLACEMENT_CHAR)
        # Everything already emitted is final, so a stop match can only start at or after it.
        found = _first_completed_stop(stable, self._stops, start=len(self.text))
        if found is not None:
            self.stopped = True
            self.stop_string = found[1]
            return self._emit_up_to(stable[: found[0]])
        held = _held_suffix_length(stable, self._stops, start=len(self.text))
        return self._emit_up_to(stable[: len(stable) - held])

    def finish(self) -> str:
        """Flush the held-back text (stop-string prefixes, trailing U+FFFD); "" after a stop string."""
        if self._finished or self.stop_string is not None:
            self._finished = True
            return ""
        self._finished = True
        full = self._decode(self._token_ids)
        found = _first_completed_stop(full, self._stops, start=len(self.text))
        if found is not None:
            self.stopped = True
            self.stop_string = found[1]
            return self._emit_up_to(full[: found[0]])
        return self._emit_up_to(full)
