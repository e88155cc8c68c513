"""The embedded-default run: a small Llama-style decoder on the Python standard library's source.

Sized so `make run` (lmx train with no arguments) finishes in under 5 minutes on a 2-core CPU,
including first-time corpus caching and tokenizer training.
"""

from lmx.config import (
    Config,
    DataConfig,
    EvalConfig,
    FFNConfig,
    ModelConfig,
    NormConfig,
    OptimConfig,
    PositionConfig,
    TrainConfig,
)

config = Config(
    name="default",
    model=ModelConfig(
        d_model=256,
        n_layers=4,
        n_heads=8,
        n_kv_heads=4,
        vocab_size=4096,
        max_seq_len=256,
        position=PositionConfig(kind="rope"),
        ffn=FFNConfig(activation="swiglu"),
        norm=NormConfig(kind="rmsnorm"),
        tie_embeddings=True,
    ),
    data=DataConfig(corpus="stdlib", tokenizer="byte_bpe", seq_len=128, batch_size=16),
    optim=OptimConfig(lr=3e-3, warmup_steps=20, schedule="cosine", weight_decay=0.1, clip_norm=1.0),
    train=TrainConfig(steps=250, eval_every=125, eval_batches=8, checkpoint_every=125, log_every=10),
    eval=EvalConfig(sample_prompts=("def ", "class ", "import "), sample_tokens=48),
)
