"""Depth x width sweep: the default config (configs/default.py, the embedded stdlib corpus) at
n_layers in {4, 2} x d_model in {256, 128, 64}, heads of 32 dimensions (n_heads = d_model / 32, GQA
with n_kv_heads = n_heads / 2), 600 steps of 16 x 128 tokens (1.2M tokens) per trial.

    lmx sweep run experiments/depth_width.py --out runs/depth_width --workers 2
    lmx sweep status runs/depth_width
    lmx sweep table runs/depth_width --sort metrics.val_loss

Time, estimated, not measured as a whole: about 27 minutes on a 2-core CPU with 2 workers (one core
each). One thread per trial ran 2048-token steps in 1.30 s (4 x 256, 4.0M parameters), 0.76 s
(2 x 256), 0.61 s (4 x 128) and 0.40 s (2 x 128) (20-step timings, 1 thread, on a 2-core machine
shared with other work); about 25 s per trial go to start-up, compilation and evaluation. The largest
trials are listed first, so two workers finish after about (1.30 + 0.40) s x 800 steps x 1.15 (two
trials sharing memory bandwidth) + 50 s = 27 min for 800 steps of the four larger trials; with the
two d_model=64 trials added (about 0.35 and 0.22 s per step) and 600 steps, about 3.6 s of steps per
trial-step spread over two workers: 600 x 3.6 / 2 x 1.15 + 75 s = about 22 minutes.
Results: experiments/results/depth_width.{md,csv,png} (docs/sweeps.md shows them).
"""

from lmx.sweep import Sweep, derived, grid, product

sweep = Sweep(
    name="depth_width",
    base="default",
    trials=product(grid("model.n_layers", [4, 2]), grid("model.d_model", [256, 128, 64])),
    fixed={"train.steps": 600, "train.eval_every": 150, "train.checkpoint_every": 150, "train.log_every": 20},
    derive=derived(lambda t: {"model.n_heads": t["model.d_model"] // 32,
                              "model.n_kv_heads": t["model.d_model"] // 64}),
)
