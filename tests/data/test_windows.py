import numpy as np
import pytest

from lmx.data.windows import PackedWindows, make_example, num_windows
from lmx.errors import DataError

EOS, PAD = 0, 1


def test_windows_overlap_by_one_token_and_drop_the_tail():
    tokens = np.arange(10, 10 + 23, dtype=np.uint16)  # 23 tokens, seq_len 5 -> 4 windows, 2 tokens dropped
    source = PackedWindows(tokens, 5, EOS, PAD)
    assert len(source) == num_windows(23, 5) == 4
    for i in range(4):
        ex = source[i]
        assert ex["inputs"].tolist() == tokens[5 * i : 5 * i + 5].tolist()
        assert ex["targets"].tolist() == tokens[5 * i + 1 : 5 * i + 6].tolist()
        assert ex["loss_mask"].tolist() == [1.0] * 5
    targets = np.concatenate([source[i]["targets"] for i in range(4)])
    assert targets.tolist() == tokens[1:21].tolist()  # every token a target exactly once
    with pytest.raises(IndexError):
        source[4]


def test_layout_on_a_hand_made_stream():
    #         doc A  EOS  doc B     EOS  doc C
    stream = [7, 8, EOS, 9, 10, 11, EOS, 12, 13]
    ex = make_example(np.array(stream), 8, EOS, PAD)
    assert ex["inputs"].tolist() == [7, 8, EOS, 9, 10, 11, EOS, 12]
    assert ex["targets"].tolist() == [8, EOS, 9, 10, 11, EOS, 12, 13]
    assert ex["segment_ids"].tolist() == [1, 1, 1, 2, 2, 2, 2, 3]
    assert ex["positions"].tolist() == [0, 1, 2, 0, 1, 2, 3, 0]
    assert ex["loss_mask"].tolist() == [1.0] * 8
    assert {k: v.dtype for k, v in ex.items()} == {
        "inputs": np.int32,
        "targets": np.int32,
        "loss_mask": np.float32,
        "segment_ids": np.int32,
        "positions": np.int32,
    }


def test_short_stream_is_one_padded_window():
    source = PackedWindows(np.array([5, 6, EOS, 7], np.uint16), 6, EOS, PAD)
    assert len(source) == 1
    ex = source[0]
    assert ex["inputs"].tolist() == [5, 6, EOS, PAD, PAD, PAD]
    assert ex["targets"].tolist() == [6, EOS, 7, PAD, PAD, PAD]
    assert ex["loss_mask"].tolist() == [1, 1, 1, 0, 0, 0]
    assert ex["segment_ids"].tolist() == [1, 1, 1, 0, 0, 0]
    assert ex["positions"].tolist() == [0, 1, 2, 0, 0, 0]
    pad = source.padding_example()
    assert pad["loss_mask"].sum() == 0 and pad["segment_ids"].sum() == 0 and set(pad["inputs"]) == {PAD}


def test_a_stream_needs_two_tokens():
    with pytest.raises(DataError):
        PackedWindows(np.array([EOS], np.uint16), 4, EOS, PAD)
