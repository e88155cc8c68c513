"""Training objectives on packed windows, checked against references written here."""

import math

import grain
import numpy as np
import pytest

from lmx.data.objectives import (
    OBJECTIVE_KEYS,
    OBJECTIVES,
    causal_lm,
    example_rng,
    make_objective,
    mlm,
    prefix_lm,
    random_spans_noise_mask,
    span_corruption,
    span_corruption_lengths,
)
from lmx.data.windows import EXAMPLE_KEYS, PackedWindows, make_example
from lmx.errors import ConfigError
from lmx.tokenizers.bytes import BytesTokenizer

EOS, PAD, BOS, MASK = 0, 1, 2, 3
SPECIALS = (EOS, PAD, BOS, MASK)
VOCAB = 1000
SENTINELS = list(range(VOCAB, VOCAB + 40))  # ids past every ordinary token


def stream(n_tokens, seed=0, doc_len=7):
    """Ordinary tokens in [4, VOCAB) with an EOS after every `doc_len` tokens."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(4, VOCAB, n_tokens)
    tokens[doc_len::doc_len + 1] = EOS
    return tokens.astype(np.int32)


def window(seq_len, seed=0, n_tokens=None):
    """One example of make_example; n_tokens < seq_len + 1 gives a padded window."""
    return make_example(stream(seq_len + 1 if n_tokens is None else n_tokens, seed), seq_len, EOS, PAD)


def mlm_default(example, rng, **kw):
    return mlm(example, rng, mask_id=MASK, vocab_size=VOCAB, special_ids=SPECIALS, **kw)


def span_default(example, rng, **kw):
    return span_corruption(example, rng, sentinel_ids=SENTINELS, eos_id=EOS, pad_id=PAD, **kw)


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key


# --- registry -------------------------------------------------------------------------------------
def test_registry_names_and_output_keys():
    assert set(OBJECTIVES) == {"causal_lm", "mlm", "prefix_lm", "span_corruption"} == set(OBJECTIVE_KEYS)
    ex = window(32)
    outputs = {
        "causal_lm": causal_lm(ex, example_rng(0, 0)),
        "mlm": mlm_default(ex, example_rng(0, 0)),
        "prefix_lm": prefix_lm(ex, example_rng(0, 0)),
        "span_corruption": span_default(ex, example_rng(0, 0)),
    }
    for name, out in outputs.items():
        assert tuple(out) == OBJECTIVE_KEYS[name], name


def test_causal_lm_is_the_identity_and_copies():
    ex = window(16)
    out = causal_lm(ex)
    assert_same(out, ex)
    out["inputs"][0] = -5
    assert ex["inputs"][0] != -5


def test_objectives_do_not_mutate_the_example():
    ex = window(40, n_tokens=30)
    before = {k: v.copy() for k, v in ex.items()}
    mlm_default(ex, example_rng(1, 2))
    prefix_lm(ex, example_rng(1, 2))
    span_default(ex, example_rng(1, 2))
    assert_same(ex, before)


@pytest.mark.parametrize("name", ["causal_lm", "mlm", "prefix_lm", "span_corruption"])
def test_determinism_given_the_seed(name):
    fn = {"causal_lm": causal_lm, "mlm": mlm_default, "prefix_lm": prefix_lm, "span_corruption": span_default}[name]
    ex = window(64, seed=3)
    assert_same(fn(ex, example_rng(7, 11)), fn(ex, example_rng(7, 11)))
    if name != "causal_lm":
        differ = [not all(np.array_equal(a, b) for a, b in zip(fn(ex, example_rng(7, i)).values(),
                                                               fn(ex, example_rng(7, 11)).values()))
                  for i in range(5)]
        assert any(differ)


def test_make_objective_reads_ids_from_the_tokenizer():
    plain = BytesTokenizer()
    rich = BytesTokenizer(special_tokens=("<|mask|>",), num_sentinels=30)
    with pytest.raises(ConfigError, match="mask"):
        make_objective("mlm", plain)
    with pytest.raises(ConfigError, match="sentinel"):
        make_objective("span_corruption", plain)
    with pytest.raises(ConfigError, match="missing"):
        make_objective("mlm")
    with pytest.raises(ConfigError, match="unknown"):
        make_objective("electra")
    # ids given explicitly win, and then a tokenizer without <|mask|> is fine
    explicit = make_objective("mlm", plain, mask_id=MASK, vocab_size=VOCAB, special_ids=SPECIALS)
    assert explicit.keywords["mask_id"] == MASK

    ex = make_example(np.frombuffer(b"hello world, this is a test of objectives", np.uint8), 32,
                      rich.eos_id, rich.pad_id)
    out = make_objective("mlm", rich)(ex, example_rng(0, 0))
    chosen = out["loss_mask"] > 0
    assert chosen.sum() == round(0.15 * 32)
    assert set(out["inputs"][chosen].tolist()) <= {rich.mask_id, *range(256), *ex["inputs"].tolist()}
    sc = make_objective("span_corruption", rich)(ex, example_rng(0, 0))
    enc = sc["encoder_inputs"].tolist()
    assert [t for t in enc if t in rich.sentinel_ids] == rich.sentinel_ids[:2]  # 32 tokens: 5 noise, 2 spans
    assert enc[int(sc["encoder_valid"].sum()) - 1] == rich.eos_id and sc["decoder_inputs"][0] == rich.pad_id


def test_grain_random_map_is_deterministic_and_resumable():
    tokens = stream(20 * 16 + 1, seed=5)
    fn = make_objective("mlm", mask_id=MASK, vocab_size=VOCAB, special_ids=SPECIALS)

    def dataset(seed):
        return grain.MapDataset.source(PackedWindows(tokens, 16, EOS, PAD)).random_map(fn, seed=seed)

    a, b = dataset(3), dataset(3)
    for i in (0, 7, 19):
        assert_same(a[i], b[i])
        assert_same(a[i], a[i])  # per-index rng: re-reading an index repeats it
    assert not all(np.array_equal(a[i]["loss_mask"], dataset(4)[i]["loss_mask"]) for i in range(5))

    opts = grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)
    it = iter(a.to_iter_dataset(opts))
    for _ in range(6):
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(4)]
    resumed = iter(dataset(3).to_iter_dataset(opts))
    resumed.set_state(state)
    for want in expected:
        assert_same(next(resumed), want)


# --- mlm ------------------------------------------------------------------------------------------
def test_mlm_chooses_round_15_percent_of_non_special_positions():
    for seed, (seq_len, n_tokens) in enumerate([(64, None), (128, None), (50, 21), (9, None), (200, 150)]):
        ex = window(seq_len, seed=seed, n_tokens=n_tokens)
        original = ex["inputs"]
        eligible = (ex["loss_mask"] > 0) & ~np.isin(original, SPECIALS)
        n_eligible = int(eligible.sum())
        for draw in range(20):
            out = mlm_default(ex, example_rng(seed, draw))
            chosen = out["loss_mask"] > 0
            assert chosen.sum() == max(1, round(0.15 * n_eligible))
            assert not chosen[~eligible].any()  # specials (EOS) and padding never chosen
            assert set(np.unique(out["loss_mask"]).tolist()) <= {0.0, 1.0}
            assert np.array_equal(out["targets"], original)
            assert np.array_equal(out["inputs"][~chosen], original[~chosen])
            assert not np.isin(out["inputs"][chosen], [EOS, PAD, BOS]).any()
            assert np.array_equal(out["segment_ids"], ex["segment_ids"])
            assert np.array_equal(out["positions"], ex["positions"])
            assert out["inputs"].dtype == np.int32 and out["loss_mask"].dtype == np.float32


def test_mlm_at_least_one_and_none_when_nothing_is_eligible():
    ex = make_example(np.array([5, EOS, 6, EOS, 7, EOS], np.int32), 5, EOS, PAD)  # 3 eligible -> 0.45 -> 1
    out = mlm_default(ex, example_rng(0, 0))
    assert out["loss_mask"].sum() == 1 and out["loss_mask"][[1, 3]].sum() == 0
    only_specials = make_example(np.array([EOS, BOS, EOS, PAD, EOS], np.int32), 4, EOS, PAD)
    out = mlm_default(only_specials, example_rng(0, 0))
    assert out["loss_mask"].sum() == 0 and np.array_equal(out["inputs"], only_specials["inputs"])


def test_mlm_80_10_10_split_is_statistically_right():
    seq_len, counts, total = 128, np.zeros(3, np.int64), 0
    n_vocab_random = VOCAB - len(SPECIALS)
    draw = 0
    while total < 20_000:
        ex = window(seq_len, seed=draw % 7)
        out = mlm_default(ex, example_rng(123, draw))
        chosen = out["loss_mask"] > 0
        got, orig = out["inputs"][chosen], ex["inputs"][chosen]
        counts += [(got == MASK).sum(), ((got != MASK) & (got != orig)).sum(), (got == orig).sum()]
        total += int(chosen.sum())
        draw += 1
    # a random token equals the original with probability 1 / n_vocab_random
    expected = np.array([0.8, 0.1 * (1 - 1 / n_vocab_random), 0.1 + 0.1 / n_vocab_random])
    sigma = np.sqrt(expected * (1 - expected) / total)
    assert np.all(np.abs(counts / total - expected) < 5 * sigma), (counts / total, expected)


def test_mlm_random_tokens_are_uniform_over_non_special_ids():
    vocab, specials, mask_id = 12, (0, 5, 11), 7  # mask_id outside special_ids is excluded as well
    allowed = sorted(set(range(vocab)) - set(specials) - {mask_id})  # 8 ids
    ex = make_example(np.full(201, 4, np.int32), 200, 0, 5)
    seen = []
    for draw in range(300):
        out = mlm(ex, example_rng(9, draw), mask_id=mask_id, vocab_size=vocab, special_ids=specials,
                  replace_probs=(0.0, 1.0, 0.0))
        seen.extend(out["inputs"][out["loss_mask"] > 0].tolist())
    values, freq = np.unique(seen, return_counts=True)
    assert values.tolist() == allowed
    expected = len(seen) / len(allowed)
    chi2 = (((freq - expected) ** 2) / expected).sum()
    assert chi2 < 30  # 7 degrees of freedom: P(chi2 > 30) < 1e-4


def test_mlm_rejects_bad_options():
    ex = window(16)
    with pytest.raises(ConfigError):
        mlm_default(ex, example_rng(0, 0), replace_probs=(0.8, 0.1))
    with pytest.raises(ConfigError):
        mlm_default(ex, example_rng(0, 0), mask_rate=0.0)
    with pytest.raises(ConfigError):
        mlm(ex, example_rng(0, 0), mask_id=1, vocab_size=2, special_ids=(0,))


# --- prefix_lm ------------------------------------------------------------------------------------
def test_prefix_lm_loss_covers_exactly_the_suffix_predictions():
    seq_len = 12
    ex = window(seq_len, seed=2)
    seen = set()
    for draw in range(300):
        out = prefix_lm(ex, example_rng(4, draw))
        p = int(out["prefix_len"])
        assert out["prefix_len"].shape == () and out["prefix_len"].dtype == np.int32
        assert 1 <= p <= seq_len - 1
        seen.add(p)
        # targets[t] = window[t + 1]; it lies in the suffix iff t + 1 >= p
        expected = [1.0 if t + 1 >= p else 0.0 for t in range(seq_len)]
        assert out["loss_mask"].tolist() == expected
        for key in ("inputs", "targets", "segment_ids", "positions"):
            assert np.array_equal(out[key], ex[key])
    assert seen == set(range(1, seq_len))  # uniform over [1, L-1]: every value turns up


def test_prefix_lm_no_target_is_visible_and_no_suffix_target_is_dropped():
    import jax.numpy as jnp

    from lmx.nn.masks import prefix_lm as prefix_mask

    seq_len = 10
    ex = window(seq_len, seed=1)
    idx = jnp.arange(seq_len)[None]
    for draw in range(8):
        out = prefix_lm(ex, example_rng(0, draw))
        allowed = np.asarray(prefix_mask(idx, idx, jnp.asarray(out["prefix_len"])[None]))[0, 0]
        for t in range(seq_len - 1):  # query t must not see input t + 1 (= targets[t]) iff it is trained on
            assert bool(out["loss_mask"][t]) == (not allowed[t, t + 1])
        assert out["loss_mask"][-1] == 1.0


def test_prefix_lm_fixed_fraction_and_padding():
    ex = window(20)
    assert int(prefix_lm(ex, None, prefix_fraction=0.5)["prefix_len"]) == 10
    assert int(prefix_lm(ex, None, prefix_fraction=0.0)["prefix_len"]) == 1
    assert int(prefix_lm(ex, None, prefix_fraction=1.0)["prefix_len"]) == 19
    padded = window(20, n_tokens=9)  # 8 real inputs
    for draw in range(50):
        out = prefix_lm(padded, example_rng(2, draw))
        p = int(out["prefix_len"])
        assert 1 <= p <= 7
        assert out["loss_mask"].tolist() == [1.0 if p - 1 <= t < 8 else 0.0 for t in range(20)]
    with pytest.raises(ConfigError):
        prefix_lm(ex, None, prefix_fraction=1.5)


# --- span_corruption ------------------------------------------------------------------------------
def reconstruct(out, sentinels=SENTINELS):
    """The original tokens from the encoder input and decoder targets, substituting each sentinel."""
    enc = out["encoder_inputs"][out["encoder_valid"] > 0].tolist()
    dec = out["decoder_targets"][out["decoder_loss_mask"] > 0].tolist()
    assert enc[-1] == EOS and dec[-1] == EOS
    enc, dec = enc[:-1], dec[:-1]
    spans, current = {}, None
    for tok in dec:  # s_0 Z_0 s_1 Z_1 ...
        if tok in sentinels:
            current = tok
            spans[current] = []
        else:
            spans[current].append(tok)
    tokens = []
    for tok in enc:
        tokens.extend(spans.pop(tok) if tok in sentinels else [tok])
    assert not spans  # every decoder span was used
    return tokens


def test_span_corruption_round_trip():
    for seed, (seq_len, n_tokens) in enumerate([(64, None), (100, None), (37, None), (64, 40), (30, 3)]):
        for draw in range(10):
            ex = window(seq_len, seed=seed, n_tokens=n_tokens)  # EOS tokens inside: must survive too
            n = int(ex["loss_mask"].sum())
            out = span_default(ex, example_rng(seed, draw))
            assert reconstruct(out) == ex["inputs"][:n].tolist()


def test_span_corruption_counts_and_sentinel_order():
    seq_len = 200
    fractions = []
    for draw in range(30):
        ex = window(seq_len, seed=draw)
        out = span_default(ex, example_rng(5, draw))
        enc = out["encoder_inputs"][out["encoder_valid"] > 0]
        dec = out["decoder_targets"][out["decoder_loss_mask"] > 0]
        used = enc[np.isin(enc, SENTINELS)].tolist()
        n_noise = round(seq_len * 0.15)  # 30
        n_spans = round(n_noise / 3.0)  # 10
        assert used == SENTINELS[:n_spans]  # in order, each once, no more than available
        assert dec[np.isin(dec, SENTINELS)].tolist() == used and dec[0] == SENTINELS[0]
        assert len(dec) == n_noise + n_spans + 1 and len(enc) == seq_len - n_noise + n_spans + 1
        fractions.append((len(dec) - n_spans - 1) / seq_len)
        assert enc[0] == ex["inputs"][0]  # T5: the sequence opens with a non-noise span ...
        assert dec[-2] == ex["inputs"][seq_len - 1]  # ... and closes with a noise span
    assert abs(np.mean(fractions) - 0.15) < 0.01


def test_random_spans_noise_mask_matches_t5_counts_and_varies():
    lengths = set()
    covered = np.zeros(50, int)
    for draw in range(200):
        mask = random_spans_noise_mask(50, example_rng(1, draw))
        starts = np.flatnonzero(mask & ~np.r_[False, mask[:-1]])
        assert mask.sum() == round(50 * 0.15) and len(starts) == round(mask.sum() / 3)
        lengths.update(np.diff(np.r_[starts, 50]).tolist())
        covered += mask
    assert covered[0] == 0 and covered[-1] == 200 and (covered[1:] > 0).sum() >= 40
    assert len(lengths) > 5  # the segmentation is random
    assert random_spans_noise_mask(1, example_rng(0, 0)).tolist() == [False]


def test_span_corruption_static_shapes_are_the_tight_maximum():
    seq_len = 40
    lengths = span_corruption_lengths(seq_len)
    longest_enc = longest_dec = most_spans = 0
    for n_tokens in range(2, seq_len + 2):  # 1 .. seq_len real inputs
        ex = window(seq_len, seed=n_tokens, n_tokens=n_tokens)
        out = span_default(ex, example_rng(0, n_tokens))
        assert out["encoder_inputs"].shape == out["encoder_valid"].shape == (lengths.encoder_len,)
        assert out["decoder_inputs"].shape == out["decoder_targets"].shape == (lengths.decoder_len,)
        assert out["decoder_loss_mask"].shape == (lengths.decoder_len,)
        assert {k: v.dtype for k, v in out.items()} == {
            "encoder_inputs": np.int32, "encoder_valid": np.float32, "decoder_inputs": np.int32,
            "decoder_targets": np.int32, "decoder_loss_mask": np.float32}
        n_enc, n_dec = int(out["encoder_valid"].sum()), int(out["decoder_loss_mask"].sum())
        assert (out["encoder_valid"][:n_enc] == 1).all() and (out["encoder_inputs"][n_enc:] == PAD).all()
        assert (out["decoder_targets"][n_dec:] == PAD).all() and (out["decoder_inputs"][n_dec:] == PAD).all()
        longest_enc, longest_dec = max(longest_enc, n_enc), max(longest_dec, n_dec)
        most_spans = max(most_spans, int(np.isin(out["encoder_inputs"], SENTINELS).sum()))
    assert (longest_enc, longest_dec, most_spans) == tuple(lengths)
    # closed forms for a full window of L tokens: noise = rint(0.15 L), spans = rint(noise / 3)
    for seq_len in (128, 512, 2048):
        noise = round(0.15 * seq_len)
        spans = round(noise / 3)
        enc, dec, most = span_corruption_lengths(seq_len)
        assert enc >= seq_len - noise + spans + 1 and dec >= noise + spans + 1 and most >= spans
        assert enc <= math.ceil(0.9 * seq_len) + 2 and dec <= math.ceil(0.2 * seq_len) + 3


def test_span_corruption_decoder_inputs_and_start_id():
    ex = window(48, seed=4)
    for start, expect in ((None, PAD), (BOS, BOS)):
        out = span_default(ex, example_rng(0, 1), decoder_start_id=start)
        n = int(out["decoder_loss_mask"].sum())
        assert out["decoder_inputs"][0] == expect
        assert np.array_equal(out["decoder_inputs"][1:n], out["decoder_targets"][: n - 1])


def test_span_corruption_sizes_sentinels_and_padding_example():
    ex = window(64)
    lengths = span_corruption_lengths(64)
    out = span_default(ex, example_rng(0, 0), encoder_len=lengths.encoder_len + 5, decoder_len=lengths.decoder_len + 2)
    assert out["encoder_inputs"].shape == (lengths.encoder_len + 5,)
    assert out["decoder_targets"].shape == (lengths.decoder_len + 2,)
    assert reconstruct(out) == ex["inputs"].tolist()
    with pytest.raises(ConfigError, match="encoder_len"):
        span_default(ex, example_rng(0, 0), encoder_len=lengths.encoder_len - 1)
    with pytest.raises(ConfigError, match="sentinels"):
        span_corruption(ex, example_rng(0, 0), sentinel_ids=SENTINELS[: lengths.max_spans - 1],
                        eos_id=EOS, pad_id=PAD)
    blank = PackedWindows(stream(100), 64, EOS, PAD).padding_example()
    out = span_default(blank, example_rng(0, 0))
    assert out["encoder_valid"].sum() == 0 and out["decoder_loss_mask"].sum() == 0
    assert (out["encoder_inputs"] == PAD).all() and (out["decoder_inputs"] == PAD).all()
    assert set(EXAMPLE_KEYS).isdisjoint(out)
