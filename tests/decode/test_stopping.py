"""Stop strings across token boundaries and streaming detokenisation."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmx.decode.stopping import TextStream, cut_at_stop, find_stop, validate_stops
from lmx.errors import ConfigError

PIECES = ["Hel", "lo", " wor", "ld", "<", "/s", ">", "\n", "ab", "c", "x"]


def decode(ids):
    return "".join(PIECES[i] for i in ids)


def tokens(*pieces):
    return [PIECES.index(p) for p in pieces]


def stream_all(stream, ids):
    chunks = [stream.push(i) for i in ids]
    chunks.append(stream.finish())
    return chunks


# ---------------------------------------------------------------- find_stop / cut_at_stop


def test_find_and_cut():
    assert find_stop("hello world", ["wor"]) == 6
    assert find_stop("hello world", ["zzz"]) is None
    assert find_stop("hello", []) is None
    assert cut_at_stop("hello world", ["o w", "ld"]) == ("hell", "o w")  # earliest wins
    assert cut_at_stop("hello world", ["ld", "o w"]) == ("hell", "o w")  # whatever the list order
    assert cut_at_stop("stop here", ["stop"]) == ("", "stop")
    assert cut_at_stop("no stop", ["STOP"]) == ("no stop", None)


def test_first_completed_stop_wins():
    # "ab" and "abc" start together; "ab" is complete first.
    assert cut_at_stop("xabcd", ["abc", "ab"]) == ("x", "ab")
    # Same end: the longer (earlier-starting) one is cut.
    assert cut_at_stop("x</s>", ["s>", "</s>"]) == ("x", "</s>")
    # A stop ending inside a longer, earlier-starting match: the completed one wins (streaming semantics).
    assert cut_at_stop("x<end>", ["<end>", "end"]) == ("x<", "end")


def test_validate_stops():
    assert validate_stops(["a", "bc"]) == ("a", "bc")
    with pytest.raises(ConfigError, match="stop strings must be non-empty"):
        validate_stops(["a", ""])
    with pytest.raises(ConfigError, match="stop strings"):
        validate_stops("</s>")
    with pytest.raises(ConfigError, match="stop strings"):
        validate_stops([3])
    with pytest.raises(ConfigError, match="non-empty"):
        TextStream(decode, stops=[""])


# ---------------------------------------------------------------- TextStream


def test_stream_without_stops_emits_each_piece():
    stream = TextStream(decode)
    assert stream_all(stream, tokens("Hel", "lo", " wor", "ld")) == ["Hel", "lo", " wor", "ld", ""]
    assert stream.text == "Hello world" and not stream.stopped and stream.stop_string is None


def test_stop_spanning_several_tokens():
    stream = TextStream(decode, stops=["</s>"])
    chunks = stream_all(stream, tokens("Hel", "lo", "<", "/s", ">", "x", "x"))
    # "<" and "</s" are held back as prefixes of the stop; at ">" the stop completes.
    assert chunks == ["Hel", "lo", "", "", "", "", "", ""]
    assert stream.text == "Hello" and stream.stopped and stream.stop_string == "</s>"


def test_stop_spanning_token_boundary_inside_pieces():
    # Stop "lo wo" starts inside one token and ends inside another.
    stream = TextStream(decode, stops=["lo wo"])
    chunks = stream_all(stream, tokens("Hel", "lo", " wor", "ld"))
    # The trailing "l" of "Hel" could start the stop: held until "lo" shows the "l" before it cannot.
    assert chunks == ["He", "l", "", "", ""]
    assert stream.stop_string == "lo wo"


def test_stop_at_the_very_start():
    stream = TextStream(decode, stops=["Hel"])
    assert stream_all(stream, tokens("Hel", "lo")) == ["", "", ""]
    assert stream.text == "" and stream.stop_string == "Hel"


def test_two_stops_earliest_wins():
    stream = TextStream(decode, stops=["ld", "o w"])
    assert "".join(stream_all(stream, tokens("Hel", "lo", " wor", "ld"))) == "Hell"
    assert stream.stop_string == "o w"


def test_partial_stop_at_end_is_held_then_released_by_finish():
    stream = TextStream(decode, stops=["</s>"])
    assert [stream.push(i) for i in tokens("ab", "<", "/s")] == ["ab", "", ""]
    assert stream.text == "ab" and not stream.stopped
    assert stream.finish() == "</s"
    assert stream.text == "ab</s"
    assert stream.finish() == "" and stream.push(tokens("x")[0]) == ""


def test_held_prefix_released_when_it_stops_matching():
    stream = TextStream(decode, stops=["</s>"])
    assert [stream.push(i) for i in tokens("<", "/s", "x")] == ["", "", "</sx"]


def test_stop_that_is_a_prefix_of_another():
    stream = TextStream(decode, stops=["abcx", "ab"])
    assert stream_all(stream, tokens("x", "ab", "c", "x")) == ["x", "", "", "", ""]
    assert stream.stop_string == "ab"
    stream = TextStream(decode, stops=["abc", "abcx"])
    assert "".join(stream_all(stream, tokens("x", "ab", "c", "x"))) == "x"
    assert stream.stop_string == "abc"


def test_eos_stops_without_emitting_and_finish_flushes():
    eos = len(PIECES)
    stream = TextStream(decode, stops=["</s>"], eos_id=eos)
    assert [stream.push(i) for i in tokens("ab", "<")] == ["ab", ""]
    assert stream.push(eos) == ""
    assert stream.stopped and stream.stop_string is None
    assert stream.push(tokens("c")[0]) == ""
    assert stream.finish() == "<"
    assert stream.text == "ab<" and stream.token_ids == tokens("ab", "<")


# A byte-level fake tokenizer: "€" is three UTF-8 bytes split over tokens.
BYTE_PIECES = [b"a", b"b", b"ab", b"c", b" ", b"\xe2", b"\x82", b"\xac", b"\xe2\x82", b"\x82\xac", b"\xff"]


def byte_decode(ids):
    return b"".join(BYTE_PIECES[i] for i in ids).decode("utf-8", errors="replace")


def test_incomplete_utf8_is_held_back():
    stream = TextStream(byte_decode)
    assert byte_decode([0, 5]) == "a\ufffd"
    assert stream.push(0) == "a"
    assert stream.push(5) == ""  # "\xe2" alone decodes to U+FFFD: held
    assert stream.push(6) == ""
    assert stream.push(7) == "€"
    assert stream.push(8) == ""
    assert stream.finish() == "\ufffd"  # never completed: flushed as decoded
    assert stream.text == "a€\ufffd"


def test_stop_string_with_multibyte_char():
    stream = TextStream(byte_decode, stops=["€c"])
    assert "".join(stream_all(stream, [0, 8, 7, 3, 0])) == "a"
    assert stream.stop_string == "€c"


def test_invalid_byte_becomes_permanent_replacement():
    stream = TextStream(byte_decode)
    assert stream.push(10) == ""
    assert stream.push(0) == "\ufffda"


# ---------------------------------------------------------------- the invariant, property-tested

EOS = len(BYTE_PIECES)
STOP_ALPHABET = ["a", "b", "c", " ", "€"]


@settings(max_examples=300, deadline=None)
@given(
    ids=st.lists(st.integers(0, EOS), max_size=14),
    stops=st.lists(st.text(st.sampled_from(STOP_ALPHABET), min_size=1, max_size=4), max_size=3),
    use_eos=st.booleans(),
)
def test_stream_matches_cut_of_full_text(ids, stops, use_eos):
    eos_id = EOS if use_eos else None
    ids = [i for i in ids if use_eos or i != EOS]
    stream = TextStream(byte_decode, stops=stops, eos_id=eos_id)
    chunks = stream_all(stream, ids)
    before_eos = ids[: ids.index(EOS)] if EOS in ids else ids
    expected, stop = cut_at_stop(byte_decode(before_eos), stops)
    assert "".join(chunks) == expected == stream.text
    assert stream.stop_string == stop
    if stop is not None or EOS in ids:
        assert stream.stopped
