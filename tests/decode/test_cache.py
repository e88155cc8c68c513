"""Cached incremental decoding (lmx.nn.kv_cache + model.extend) equals the full forward pass.

For every position scheme, attention pattern/kind and architecture of the catalog (a few settings
share a case), jitted prefill/extend/forward functions (compiled once per shape and config) run on a
batch of two rows with different prompt lengths (right-padded):

    prefill    the prompts through `extend(..., fresh=True)` (logits at every prompt position)
    chunk      3 tokens per row at once through a non-fresh `extend` (chunked prefill)
    steps      4 single tokens per row, each row at its own positions
    reorder    `kv_cache.reorder` swaps the rows; one more step with the swapped tokens
    forget     `kv_cache.forget_after` drops the last 2 steps; 3 different tokens are extended
               instead (what speculative decoding does after rejecting draft tokens)

and the logits of every phase are compared, at every position, with the full forward of the whole
(unpadded) sequences. The reference rows are unpadded and rows never interact in a full forward,
so matching it means the ragged batch gives each row's logits as if it were decoded alone.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmx.nn import build_model, kv_cache
from tests.nn.helpers import tiny_config

B = 2
PROMPT = np.array([5, 3], np.int32)  # ragged prompts: row 1 is right-padded in the prefill
P_MAX = int(PROMPT.max())
CHUNK, STEPS = 3, 4
SEQ = P_MAX + CHUNK + STEPS + 1  # row 0's last token is the reorder step
FORGET = 2  # steps dropped by forget_after
ENC_LEN = np.array([6, 4], np.int32)  # encoder-decoder: ragged encoder inputs
VOCAB = 300

CASES = {
    **{f"pos_{p}": dict(position__kind=p) for p in
       ("none", "rope", "xpos", "alibi", "t5", "shaw", "sinusoidal", "learned", "base_n")},
    "rope_interleaved_partial": dict(position__kind="rope", position__rope__layout="interleaved", position__rope__fraction=0.5),
    # window 3 < 13 tokens: the 3-slot ring buffer wraps 4 times (and the prefill is longer than it)
    "sliding_window_ring": dict(attention__pattern="sliding_window", attention__window=3),
    # a preallocated cache (ring=False) under a window, so forget_after applies; unrolled layers
    "sliding_window_noring_unscanned": dict(attention__pattern="sliding_window", attention__window=3, position__kind="alibi",
                                            scan_layers=False),
    "block_sparse": dict(attention__pattern="block_sparse", attention__window=3, attention__stride=4, attention__global_tokens=1),
    "linear": dict(attention__kind="linear", position__kind="none"),
    "qk_norm_mqa": dict(attention__qk_norm=True, n_kv_heads=1, position__kind="xpos"),  # MQA: one cached kv head
    "hybrid_AM": dict(layer_pattern="AM"),
    "hybrid_MA": dict(layer_pattern="MA", position__kind="alibi"),
    "prefix_lm": dict(arch="prefix_lm"),
    "encdec_t5": dict(arch="encoder_decoder", position__kind="t5"),
    "encdec_rope": dict(arch="encoder_decoder", position__kind="rope"),
}


def _ring(name: str) -> bool:
    return "noring" not in name


def _forgets(config, name: str) -> bool:
    """forget_after only discards attention keys: an SSM state cannot be rewound, and a ring buffer
    has already overwritten the older keys that the re-extended tokens would need again."""
    ring_buffer = config.attention.pattern == "sliding_window" and _ring(name)
    recurrent = "M" in config.layer_pattern or config.attention.kind == "linear"
    return not recurrent and not ring_buffer


def _rows_take(a_BxL, index_BxT):
    return np.take_along_axis(np.asarray(a_BxL), np.asarray(index_BxT), axis=1)


def _compiled(model, capacity: int):
    """Jitted full forward, prefill and (non-fresh) extend of `model`: each compiles once per shape,
    so the single steps and the reorder step share one program, the chunk and the forget re-extend
    another."""
    graphdef, state = nnx.split(model)
    config = model.config
    encdec = config.arch == "encoder_decoder"

    def kwargs(prefix_len_B):
        return {"prefix_len_B": prefix_len_B} if config.arch == "prefix_lm" else {}

    @jax.jit
    def forward(state, tokens_BxL, prefix_len_B, enc_BxS, enc_valid_BxS):
        model = nnx.merge(graphdef, state)
        if encdec:
            return model(enc_BxS, tokens_BxL, enc_valid_BxS)
        return model(tokens_BxL, **kwargs(prefix_len_B))

    @jax.jit
    def prefill(state, tokens_BxT, valid_BxT, prefix_len_B, enc_BxS, enc_valid_BxS):
        model = nnx.merge(graphdef, state)
        positions = jnp.broadcast_to(jnp.arange(tokens_BxT.shape[1], dtype=jnp.int32), tokens_BxT.shape)
        if encdec:
            cache = kv_cache.init_cache(config, B, capacity, context_len=enc_BxS.shape[1])
            cache = dataclasses.replace(cache, context_valid_BxS=enc_valid_BxS)
            return model.extend(tokens_BxT, positions, cache, valid_BxT=valid_BxT, fresh=True,
                                encoder_states_BxSxD=model.encode(enc_BxS, enc_valid_BxS))
        cache = kv_cache.init_cache(config, B, capacity)
        return model.extend(tokens_BxT, positions, cache, valid_BxT=valid_BxT, fresh=True, **kwargs(prefix_len_B))

    @jax.jit
    def extend(state, tokens_BxT, positions_BxT, cache, prefix_len_B):
        return nnx.merge(graphdef, state).extend(tokens_BxT, positions_BxT, cache, **kwargs(prefix_len_B))

    return state, forward, prefill, extend


@functools.cache
def _decode(name: str):
    """Every phase's cached logits (numpy) and the references for case `name` (see the docstring)."""
    config = tiny_config(**CASES[name])
    model = build_model(config, rngs=nnx.Rngs(0))
    capacity = kv_cache.cache_capacity(config, SEQ, ring=_ring(name))
    state, forward, prefill, extend = _compiled(model, capacity)
    seq, alt, enc, enc_valid = _data()
    prompt = jnp.asarray(PROMPT)
    enc_j, enc_valid_j = jnp.asarray(enc), jnp.asarray(enc_valid)
    out = {"config": config, "capacity": capacity}
    # both reference sequences in one batch (rows never interact in a full forward)
    ref = np.asarray(forward(state, jnp.asarray(np.concatenate([seq, alt])), jnp.concatenate([prompt, prompt]),
                             jnp.concatenate([enc_j, enc_j]), jnp.concatenate([enc_valid_j, enc_valid_j])))
    out["ref"], out["ref_alt"] = ref[:B], ref[B:]

    valid = np.arange(P_MAX) < PROMPT[:, None]
    logits, cache = prefill(state, jnp.asarray(np.where(valid, seq[:, :P_MAX], 0)), jnp.asarray(valid), prompt,
                            enc_j, enc_valid_j)
    out["prefill"] = np.asarray(logits)

    chunk_pos = PROMPT[:, None] + np.arange(CHUNK, dtype=np.int32)
    logits, cache = extend(state, jnp.asarray(_rows_take(seq, chunk_pos)), jnp.asarray(chunk_pos), cache, prompt)
    out["chunk"] = np.asarray(logits)

    steps = []
    for s in range(STEPS):
        pos = PROMPT[:, None] + CHUNK + s
        logits, cache = extend(state, jnp.asarray(_rows_take(seq, pos)), jnp.asarray(pos), cache, prompt)
        steps.append(np.asarray(logits[:, 0]))
    out["steps"] = np.stack(steps, axis=1)

    # reorder: swap the rows, then one more step of each (now swapped) row
    perm = np.array([1, 0])
    swapped = kv_cache.reorder(cache, jnp.asarray(perm))
    pos = PROMPT[perm][:, None] + CHUNK + STEPS
    logits, _ = extend(state, jnp.asarray(_rows_take(seq[perm], pos)), jnp.asarray(pos), swapped,
                       jnp.asarray(PROMPT[perm]))
    out["reorder"], out["cache"], out["swapped_cache"] = np.asarray(logits[:, 0]), cache, swapped

    # forget_after: drop the last FORGET steps, extend 3 different tokens in their place at once
    keep = PROMPT + CHUNK + STEPS - FORGET - 1
    if "M" in config.layer_pattern or config.attention.kind == "linear":  # refused (test below)
        return out
    forgot = kv_cache.forget_after(cache, jnp.asarray(keep))
    new_pos = keep[:, None] + 1 + np.arange(CHUNK, dtype=np.int32)
    logits, _ = extend(state, jnp.asarray(_rows_take(alt, new_pos)), jnp.asarray(new_pos), forgot, prompt)
    out["forget"] = np.asarray(logits)
    return out


@functools.cache
def _data():
    rng = np.random.default_rng(0)
    seq = rng.integers(1, VOCAB, (B, SEQ), dtype=np.int32)
    alt = seq.copy()
    for b in range(B):  # different tokens from the first forgotten position on
        start = PROMPT[b] + CHUNK + STEPS - FORGET
        alt[b, start:] = (seq[b, start:] + 1 + rng.integers(0, VOCAB - 2, SEQ - start)) % VOCAB
    enc = rng.integers(1, VOCAB, (B, int(ENC_LEN.max())), dtype=np.int32)
    enc_valid = np.arange(enc.shape[1]) < ENC_LEN[:, None]
    return seq, alt, enc, enc_valid


def _close(got, ref, what: str):
    got, ref = np.asarray(got), np.asarray(ref)
    atol = 1e-5 * max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(got, ref, rtol=0, atol=atol, err_msg=what)


@pytest.mark.parametrize("name", list(CASES))
def test_cached_decoding_matches_full_forward(name):
    out = _decode(name)
    if name == "sliding_window_ring":
        assert out["capacity"] == 3
    ref = out["ref"]
    assert np.abs(ref).max() > 1e-3  # the comparison is not between near-zero logits
    for b in range(B):
        p = int(PROMPT[b])
        _close(out["prefill"][b, :p], ref[b, :p], f"{name}: prefill, row {b}")
        _close(out["chunk"][b], ref[b, p : p + CHUNK], f"{name}: chunked extend, row {b}")
        for s in range(STEPS):
            _close(out["steps"][b, s], ref[b, p + CHUNK + s], f"{name}: step {s}, row {b}")
        # reorder: cache row b holds the old row 1 - b
        _close(out["reorder"][b], ref[1 - b, int(PROMPT[1 - b]) + CHUNK + STEPS], f"{name}: after reorder, row {b}")
        if _forgets(out["config"], name):
            start = p + CHUNK + STEPS - FORGET
            _close(out["forget"][b], out["ref_alt"][b, start : start + CHUNK],
                   f"{name}: re-extend after forget_after, row {b}")
    # reorder permutes every per-row array (positions, layer caches on axis 1, encoder padding)
    cache, swapped = out["cache"], out["swapped_cache"]
    np.testing.assert_array_equal(swapped.positions_BxC, np.asarray(cache.positions_BxC)[::-1])
    for a, s in zip(jax.tree.leaves(cache.layers), jax.tree.leaves(swapped.layers)):
        np.testing.assert_array_equal(np.asarray(s), np.asarray(a)[:, ::-1])
    if cache.context_valid_BxS is not None:
        np.testing.assert_array_equal(swapped.context_valid_BxS, np.asarray(cache.context_valid_BxS)[::-1])


def test_ring_buffer_keeps_only_the_window():
    """The sliding-window cache holds exactly the last `window` positions of each row."""
    config = tiny_config(attention__pattern="sliding_window", attention__window=3)
    model = build_model(config, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)

    @jax.jit
    def prefill(state, tokens, valid):
        positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
        cache = kv_cache.init_cache(config, tokens.shape[0], kv_cache.cache_capacity(config, 64))
        return nnx.merge(graphdef, state).extend(tokens, positions, cache, valid_BxT=valid, fresh=True)[1]

    tokens = jnp.ones((3, 7), jnp.int32)
    valid = jnp.arange(7) < jnp.array([7, 2, 5])[:, None]
    cache = prefill(state, tokens, valid)
    held = [sorted(p for p in row if p >= 0) for row in np.asarray(cache.positions_BxC).tolist()]
    assert held == [[4, 5, 6], [0, 1], [2, 3, 4]]
    for row in np.asarray(cache.positions_BxC):  # slot = position mod capacity
        for slot, p in enumerate(row):
            assert p < 0 or p % 3 == slot


@pytest.mark.parametrize("name", ["hybrid_AM", "linear"])
def test_forget_after_refuses_recurrent_states(name):
    """SSM states and linear attention's running sums have absorbed the tokens: no silent rollback."""
    out = _decode(name)  # computed (and cached) by the parametrized test
    with pytest.raises(ValueError, match="cannot rewind recurrent states"):
        kv_cache.forget_after(out["cache"], jnp.zeros((B,), jnp.int32))


# per-layer caches: `init_cache(..., per_layer=True)` with `layers=kv_cache.unstack_layers(model.blocks)`,
# the layout of the unrolled decode loop (each layer updates its own buffers in place)

PER_LAYER_CASES = {
    "rope": dict(),
    "alibi": dict(position__kind="alibi"),
    "sliding_window_ring": dict(attention__pattern="sliding_window", attention__window=3),
    "hybrid_AM": dict(layer_pattern="AM"),
    "linear": dict(attention__kind="linear", position__kind="sinusoidal"),
}


def test_linear_attention_cache_is_a_constant_size_state():
    """Linear attention decodes from its running sums S = sum phi(k) v^T and z = sum phi(k): the
    cache has no keys or values and does not grow with the capacity."""
    config = tiny_config(attention__kind="linear", position__kind="none")
    small, large = (kv_cache.init_cache(config, B, capacity) for capacity in (4, 400))
    assert isinstance(small.layers["mixer"], kv_cache.LinearAttentionState)  # running sums, no KV slots
    assert jax.tree.map(jnp.shape, small.layers) == jax.tree.map(jnp.shape, large.layers)
    N, H = config.n_heads, config.resolved_head_dim
    assert small.layers["mixer"].S.shape == (config.n_layers, B, N, H, H)


@functools.cache
def _decode_per_layer(name: str):
    """(full-forward logits, prefill, chunk of 3 non-fresh tokens, single steps) with per-layer caches."""
    config = tiny_config(**PER_LAYER_CASES[name])
    model = build_model(config, rngs=nnx.Rngs(0))
    capacity = kv_cache.cache_capacity(config, SEQ)
    graphdef, state = nnx.split(model)
    seq, _, _, _ = _data()

    @jax.jit
    def forward(state, tokens_BxL):
        return nnx.merge(graphdef, state)(tokens_BxL)

    @jax.jit
    def prefill(state, tokens_BxT, valid_BxT):
        model = nnx.merge(graphdef, state)
        positions = jnp.broadcast_to(jnp.arange(tokens_BxT.shape[1], dtype=jnp.int32), tokens_BxT.shape)
        cache = kv_cache.init_cache(config, B, capacity, per_layer=True)
        return model.extend(tokens_BxT, positions, cache, valid_BxT=valid_BxT, fresh=True,
                            layers=kv_cache.unstack_layers(model.blocks))

    @jax.jit
    def extend(state, tokens_BxT, positions_BxT, cache):
        model = nnx.merge(graphdef, state)
        return model.extend(tokens_BxT, positions_BxT, cache, layers=kv_cache.unstack_layers(model.blocks))

    out = {"config": config, "capacity": capacity, "ref": np.asarray(forward(state, jnp.asarray(seq)))}
    valid = np.arange(P_MAX) < PROMPT[:, None]
    logits, cache = prefill(state, jnp.asarray(np.where(valid, seq[:, :P_MAX], 0)), jnp.asarray(valid))
    assert cache.per_layer and isinstance(cache.layers, list)
    assert len(cache.layers) == config.n_layers // len(config.layer_pattern)
    out["prefill"] = np.asarray(logits)
    chunk_pos = PROMPT[:, None] + np.arange(CHUNK, dtype=np.int32)
    logits, cache = extend(state, jnp.asarray(_rows_take(seq, chunk_pos)), jnp.asarray(chunk_pos), cache)
    out["chunk"] = np.asarray(logits)
    steps = []
    for s in range(STEPS + 1):
        pos = PROMPT[:, None] + CHUNK + s
        logits, cache = extend(state, jnp.asarray(_rows_take(seq, pos)), jnp.asarray(pos), cache)
        steps.append(np.asarray(logits[:, 0]))
    out["steps"] = np.stack(steps, axis=1)
    return out


@pytest.mark.parametrize("name", list(PER_LAYER_CASES))
def test_per_layer_cache_matches_full_forward(name):
    out = _decode_per_layer(name)
    if name == "sliding_window_ring":
        assert out["capacity"] == 3  # a ring buffer that the 13 tokens wrap several times
    ref = out["ref"]
    assert np.abs(ref).max() > 1e-3
    for b in range(B):
        p = int(PROMPT[b])
        _close(out["prefill"][b, :p], ref[b, :p], f"{name} per-layer: prefill, row {b}")
        _close(out["chunk"][b], ref[b, p : p + CHUNK], f"{name} per-layer: non-fresh extend of 3, row {b}")
        for s in range(STEPS + 1):
            if p + CHUNK + s < SEQ:
                _close(out["steps"][b, s], ref[b, p + CHUNK + s], f"{name} per-layer: step {s}, row {b}")


@pytest.mark.parametrize("name, T, write_first", [
    ("rope", 3, True),  # written into the cache before attending
    ("rope", 1, True),
    ("sliding_window_ring", 1, True),
    ("sliding_window_ring", 3, False),  # the ring could overwrite keys the new tokens still need: two parts
])
def test_per_layer_extend_path(name, T, write_first):
    """The cases above exercise the path they are meant to (lmx.nn.kv_cache.plan_call)."""
    config = tiny_config(**PER_LAYER_CASES[name])
    cache = kv_cache.init_cache(config, B, kv_cache.cache_capacity(config, SEQ), per_layer=True)
    positions = jnp.asarray(PROMPT[:, None] + np.arange(T, dtype=np.int32))
    plan, _ = kv_cache.plan_call(cache, positions, jnp.ones(positions.shape, bool), False,
                                 config.attention.pattern == "sliding_window")
    assert plan.write_first == write_first
