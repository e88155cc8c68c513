"""Selective state-space mixer in the style of Mamba (Gu & Dao 2023, arXiv:2312.00752).

With E = d_inner = expand * d_model channels, N = d_state, R = dt_rank and K = d_conv:
    x, z   = split(u W_in)                        W_in: [embed, 2E]  ("embed", "mlp")
    x      = SiLU(causal_depthwise_conv(x) + b_conv)   kernel [E, K] ("mlp", None), left-padded by K-1
    dt, B, C = split(x W_x)                       W_x: [E, R + 2N]  ("mlp", None)
    Delta  = softplus(dt W_dt + b_dt)             W_dt: [R, E] (None, "mlp"), b_dt: [E] ("mlp",)
    A      = -exp(A_log)                          A_log: [E, N] ("mlp", None), S4D-real init log(1..N)
    A_bar_t = exp(Delta_t A),   B_bar_t x_t = Delta_t B_t x_t   (ZOH for A, Euler for B, as in Mamba)
    h_t    = A_bar_t * h_{t-1} + B_bar_t x_t      h_t: [E, N] per sequence
    y_t    = C_t . h_t + D * x_t                  D: [E] ("mlp",), initialised to 1
    out    = (y * SiLU(z)) W_out                  W_out: [E, embed] ("mlp", "embed")
The linear recurrence is evaluated in parallel with `jax.lax.associative_scan` over time, on pairs
(a, b) with (a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2): the composition of h -> a h + b maps.
b_dt is initialised so that softplus(b_dt) = Delta is log-uniform in [dt_min, dt_max] = [1e-3, 1e-1];
W_dt is U(-R^-1/2, R^-1/2), the conv kernel and bias U(-K^-1/2, K^-1/2) (PyTorch's Conv1d default),
W_in and W_x N(0, init_std^2), W_out N(0, out_std^2). The scan and the discretisation run in
float32 whatever `compute_dtype` the projections use.

`segment_ids_BxL` keeps packed documents apart: the state restarts (A_bar = 0) and the conv sees
no earlier token where the segment id changes.

Incremental decoding: `cache = ssm.init_cache(batch)` (or `y, cache = ssm(x, return_cache=True)`
after a prompt), then `y_BxD, cache = ssm.step(x_BxD, cache)` per token. `SSMCache` holds the last
K-1 conv inputs [B, K-1, E] and the recurrent state [B, E, N].

Standalone: `self.mixer = SelectiveSSM(d_model, rngs=rngs)`, then `y_BxLxD = self.mixer(x_BxLxD)`.
The pure function `selective_scan(delta, A, B, C, x, D)` is the recurrence alone.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from lmx.nn import precision
from lmx.nn.layer_inputs import LayerCache, LayerInputs
from lmx.nn.params import constant_param, dtype_of, normal_param, param


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SSMCache:
    """Decoding state of a SelectiveSSM: the last d_conv - 1 conv inputs and the SSM state h."""

    conv_BxKm1xE: jax.Array
    ssm_BxExN: jax.Array


def _combine(left, right):
    """(a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2): apply h -> a1 h + b1, then h -> a2 h + b2."""
    a1, b1 = left
    a2, b2 = right
    return a1 * a2, a2 * b1 + b2


def selective_scan(
    delta_BxLxE: jax.Array,
    A_ExN: jax.Array,
    B_BxLxN: jax.Array,
    C_BxLxN: jax.Array,
    x_BxLxE: jax.Array,
    D_E: jax.Array | None = None,
    h0_BxExN: jax.Array | None = None,
    reset_BxL: jax.Array | None = None,
    return_state: bool = False,
):
    """y_t = C_t . h_t + D x_t with h_t = exp(Delta_t A) h_{t-1} + Delta_t B_t x_t, in float32.

    `h0_BxExN` is the state before t = 0 (zeros by default); `reset_BxL` (bool) marks tokens whose
    state restarts from zero. Returns y [B, L, E] (float32), and the final state [B, E, N] when
    `return_state`.
    """
    f32 = jnp.float32
    delta_BxLxE, A_ExN, B_BxLxN, C_BxLxN, x_BxLxE = (
        jnp.asarray(t, f32) for t in (delta_BxLxE, A_ExN, B_BxLxN, C_BxLxN, x_BxLxE)
    )
    a_BxLxExN = jnp.exp(delta_BxLxE[..., None] * A_ExN)
    if reset_BxL is not None:
        a_BxLxExN = jnp.where(reset_BxL[:, :, None, None], 0.0, a_BxLxExN)
    b_BxLxExN = (delta_BxLxE * x_BxLxE)[..., None] * B_BxLxN[:, :, None, :]
    if h0_BxExN is not None:  # fold the initial state into the first input: b_0 += a_0 h0
        b_BxLxExN = b_BxLxExN.at[:, 0].add(a_BxLxExN[:, 0] * h0_BxExN.astype(f32))
    _, h_BxLxExN = jax.lax.associative_scan(_combine, (a_BxLxExN, b_BxLxExN), axis=1)
    y_BxLxE = jnp.einsum("blen,bln->ble", h_BxLxExN, C_BxLxN)
    if D_E is not None:
        y_BxLxE = y_BxLxE + D_E.astype(f32) * x_BxLxE
    if return_state:
        return y_BxLxE, h_BxLxExN[:, -1]
    return y_BxLxE


def _uniform(rngs: nnx.Rngs, shape, bound: float) -> jax.Array:
    return jax.random.uniform(rngs.params(), shape, jnp.float32, -bound, bound)


class SelectiveSSM(nnx.Module):
    """Mamba-style selective SSM mixer [B, L, D] -> [B, L, D]; see the module docstring.

    Parameters are stored in `param_dtype`; projections and the conv run in `compute_dtype`; the
    discretisation and scan in float32. The output has `compute_dtype`.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        expand: int = 2,
        d_conv: int = 4,
        dt_rank: int | None = None,
        *,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        dt_floor: float = 1e-4,
        init_std: float = 0.02,
        out_std: float | None = None,
        param_dtype=jnp.float32,
        compute_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if d_conv < 1:
            raise ValueError(f"d_conv={d_conv} must be >= 1")
        E, N, K = expand * d_model, d_state, d_conv
        R = dt_rank or math.ceil(d_model / 16)
        self.d_model, self.d_inner, self.d_state, self.d_conv, self.dt_rank = d_model, E, N, K, R
        self.compute_dtype = dtype_of(compute_dtype)
        pdt = dtype_of(param_dtype)
        out_std = init_std if out_std is None else out_std
        self.in_proj = normal_param(rngs, (d_model, 2 * E), ("embed", "mlp"), init_std, pdt)
        self.conv_weight = param(_uniform(rngs, (E, K), K**-0.5).astype(pdt), ("mlp", None))
        self.conv_bias = param(_uniform(rngs, (E,), K**-0.5).astype(pdt), ("mlp",))
        self.x_proj = normal_param(rngs, (E, R + 2 * N), ("mlp", None), init_std, pdt)
        self.dt_proj = param(_uniform(rngs, (R, E), R**-0.5).astype(pdt), (None, "mlp"))
        # softplus(dt_bias) = dt ~ log-uniform [dt_min, dt_max]; inverse softplus: dt + log(1 - e^-dt)
        u = jax.random.uniform(rngs.params(), (E,), jnp.float32)
        dt = jnp.maximum(jnp.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)), dt_floor)
        self.dt_bias = param((dt + jnp.log(-jnp.expm1(-dt))).astype(pdt), ("mlp",))
        A_ExN = jnp.broadcast_to(jnp.arange(1, N + 1, dtype=jnp.float32), (E, N))
        self.A_log = param(jnp.log(A_ExN).astype(pdt), ("mlp", None))
        self.D = constant_param(1.0, (E,), ("mlp",), pdt)
        self.out_proj = normal_param(rngs, (E, d_model), ("mlp", "embed"), out_std, pdt)

    def init_cache(self, batch_size: int) -> SSMCache:
        """Empty decoding state (float32): no previous conv inputs, h = 0."""
        return SSMCache(
            conv_BxKm1xE=jnp.zeros((batch_size, self.d_conv - 1, self.d_inner), jnp.float32),
            ssm_BxExN=jnp.zeros((batch_size, self.d_inner, self.d_state), jnp.float32),
        )

    def _ssm_inputs(self, xc_BxLxE: jax.Array):
        """(Delta, A, B, C) from the conv output: Delta [B,L,E], A [E,N], B and C [B,L,N], float32."""
        cdt, R, N = self.compute_dtype, self.dt_rank, self.d_state
        x_dbl = precision.einsum("ble,ef->blf", xc_BxLxE, self.x_proj[...], cdt)
        dt_BxLxR, B_BxLxN, C_BxLxN = x_dbl[..., :R], x_dbl[..., R : R + N], x_dbl[..., R + N :]
        dt_BxLxE = precision.einsum("blr,re->ble", dt_BxLxR, self.dt_proj[...], cdt)
        delta_BxLxE = jax.nn.softplus(dt_BxLxE.astype(jnp.float32) + self.dt_bias[...].astype(jnp.float32))
        A_ExN = -jnp.exp(self.A_log[...].astype(jnp.float32))
        return delta_BxLxE, A_ExN, B_BxLxN.astype(jnp.float32), C_BxLxN.astype(jnp.float32)

    def __call__(
        self,
        x_BxLxD: jax.Array,
        inputs: LayerInputs | jax.Array | None = None,
        *,
        cache: LayerCache | SSMCache | None = None,
        return_cache: bool = False,
        valid_BxL: jax.Array | None = None,
    ):
        """y [B, L, D]; with a stack's LayerCache (or `return_cache`), (y, SSMCache after the last token).

        `inputs`: a LayerInputs (what a stack passes: segment ids and valid tokens are read from
        it), or segment ids [B, L], or None. `cache` continues from an earlier state: an SSMCache
        (the output alone is returned unless `return_cache`), or a stack's LayerCache (a fresh plan
        starts from zeros; the call returns its new state, as every mixer does); it cannot be combined with segment
        ids. `valid_BxL` marks real tokens of right-padded rows (a prefix of each row): padding
        leaves the state unchanged (Delta = 0), so the returned cache is the state after each row's
        last real token. One new token with a state runs the recurrence directly (O(1) per token)."""
        segment_ids_BxL = inputs
        if isinstance(inputs, LayerInputs):
            segment_ids_BxL, valid_BxL = inputs.segment_ids, inputs.valid if valid_BxL is None else valid_BxL
        state = cache.state if isinstance(cache, LayerCache) else cache
        if isinstance(cache, LayerCache) and cache.plan.fresh:
            state = self.init_cache(x_BxLxD.shape[0])
        if state is not None and x_BxLxD.shape[1] == 1 and segment_ids_BxL is None:
            y_BxD, state = self._recurrent_step(x_BxLxD[:, 0], state)
            y_BxLxD = y_BxD[:, None]
        else:
            y_BxLxD, state = self._parallel(x_BxLxD, segment_ids_BxL, state, valid_BxL)
        return (y_BxLxD, state) if isinstance(cache, LayerCache) or return_cache else y_BxLxD

    def step(self, x_BxD: jax.Array, cache: SSMCache) -> tuple[jax.Array, SSMCache]:
        """One decoding step: the output for token x_t [B, D] and the updated cache (O(1) per token);
        the same computation as `self(x_BxD[:, None], cache=cache)`."""
        return self._recurrent_step(x_BxD, cache)

    def _parallel(self, x_BxLxD, segment_ids_BxL, cache: SSMCache | None, valid_BxL):
        """(y [B, L, D], SSMCache after the last token): the conv and the associative scan over L."""
        cdt, K, E = self.compute_dtype, self.d_conv, self.d_inner
        B, L, _ = x_BxLxD.shape
        xz_BxLx2E = precision.einsum("bld,df->blf", x_BxLxD, self.in_proj[...], cdt)
        x_BxLxE, z_BxLxE = xz_BxLx2E[..., :E], xz_BxLx2E[..., E:]
        if cache is not None and segment_ids_BxL is not None:
            raise ValueError("pass either a cache or segment_ids, not both")
        if cache is None:
            history_BxKm1xE = jnp.zeros((B, K - 1, E), cdt)
        else:
            history_BxKm1xE = cache.conv_BxKm1xE.astype(cdt)
        xpad_BxLpxE = jnp.concatenate([history_BxKm1xE, x_BxLxE], axis=1)  # left padding K-1
        w_ExK = self.conv_weight[...].astype(cdt)
        # depthwise causal conv: out_t = sum_k w[:, k] x_{t - (K-1) + k}
        if segment_ids_BxL is None:
            taps = [xpad_BxLpxE[:, k : k + L] * w_ExK[:, k] for k in range(K)]
            reset_BxL = None
        else:
            seg_BxL = segment_ids_BxL
            seg_pad_BxLp = jnp.concatenate([jnp.broadcast_to(seg_BxL[:, :1], (B, K - 1)), seg_BxL], axis=1)
            # a tap reads x_{t-s} only if no segment boundary lies between t-s and t
            valid_pad_BxLp = jnp.concatenate([jnp.zeros((B, K - 1), bool), jnp.ones((B, L), bool)], axis=1)
            taps = []
            for k in range(K):
                ok_BxL = (seg_pad_BxLp[:, k : k + L] == seg_BxL) & valid_pad_BxLp[:, k : k + L]
                taps.append(jnp.where(ok_BxL[..., None], xpad_BxLpxE[:, k : k + L] * w_ExK[:, k], 0))
            prev_BxL = jnp.concatenate([seg_BxL[:, :1], seg_BxL[:, :-1]], axis=1)
            reset_BxL = seg_BxL != prev_BxL
        conv_BxLxE = sum(taps[1:], taps[0]) + self.conv_bias[...].astype(cdt)
        xc_BxLxE = jax.nn.silu(conv_BxLxE)
        delta, A, Bm, Cm = self._ssm_inputs(xc_BxLxE)
        if valid_BxL is not None:  # exp(0 * A) = 1 and Delta B x = 0: padding is the identity map
            delta = delta * valid_BxL[..., None].astype(delta.dtype)
        h0 = None if cache is None else cache.ssm_BxExN
        y_BxLxE, h_BxExN = selective_scan(
            delta, A, Bm, Cm, xc_BxLxE, self.D[...], h0_BxExN=h0, reset_BxL=reset_BxL, return_state=True
        )
        y_BxLxE = y_BxLxE.astype(cdt) * jax.nn.silu(z_BxLxE)
        out_BxLxD = precision.einsum("ble,ed->bld", y_BxLxE, self.out_proj[...], cdt)
        if valid_BxL is None:
            conv_BxKm1xE = xpad_BxLpxE[:, xpad_BxLpxE.shape[1] - (K - 1) :]
        else:  # the K-1 inputs before each row's length n sit at xpad[n : n + K - 1]
            n_B = valid_BxL.astype(jnp.int32).sum(axis=1)
            index_BxKm1 = n_B[:, None] + jnp.arange(K - 1, dtype=jnp.int32)
            conv_BxKm1xE = jnp.take_along_axis(xpad_BxLpxE, index_BxKm1[..., None], axis=1)
        return out_BxLxD, SSMCache(conv_BxKm1xE=conv_BxKm1xE.astype(jnp.float32), ssm_BxExN=h_BxExN)

    def _recurrent_step(self, x_BxD: jax.Array, cache: SSMCache) -> tuple[jax.Array, SSMCache]:
        """h_t = A_bar_t h_{t-1} + B_bar_t x_t for one token, from the conv window and state in `cache`."""
        cdt, E = self.compute_dtype, self.d_inner
        xz_Bx2E = precision.einsum("bd,df->bf", x_BxD, self.in_proj[...], cdt)
        x_BxE, z_BxE = xz_Bx2E[:, :E], xz_Bx2E[:, E:]
        window_BxKxE = jnp.concatenate([cache.conv_BxKm1xE.astype(cdt), x_BxE[:, None]], axis=1)
        conv_BxE = precision.einsum("bke,ek->be", window_BxKxE, self.conv_weight[...], cdt)
        xc_BxE = jax.nn.silu(conv_BxE + self.conv_bias[...].astype(cdt))
        delta, A_ExN, B_Bx1xN, C_Bx1xN = self._ssm_inputs(xc_BxE[:, None])
        delta_BxE, B_BxN, C_BxN = delta[:, 0], B_Bx1xN[:, 0], C_Bx1xN[:, 0]
        xf_BxE = xc_BxE.astype(jnp.float32)
        h_BxExN = (
            jnp.exp(delta_BxE[..., None] * A_ExN) * cache.ssm_BxExN
            + (delta_BxE * xf_BxE)[..., None] * B_BxN[:, None, :]
        )
        y_BxE = jnp.einsum("ben,bn->be", h_BxExN, C_BxN) + self.D[...].astype(jnp.float32) * xf_BxE
        y_BxE = y_BxE.astype(cdt) * jax.nn.silu(z_BxE)
        out_BxD = precision.einsum("be,ed->bd", y_BxE, self.out_proj[...], cdt)
        new_cache = SSMCache(conv_BxKm1xE=window_BxKxE[:, 1:].astype(jnp.float32), ssm_BxExN=h_BxExN)
        return out_BxD, new_cache
