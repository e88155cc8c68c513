"""Encoder-decoder (T5-style): span corruption (15% noise, mean span 3), T5 relative position
buckets shared across layers, RMSNorm pre-norm, gated-GELU FFN, cross-attention to the encoder."""

from lmx.config import (
    Config,
    DataConfig,
    EvalConfig,
    FFNConfig,
    ModelConfig,
    OptimConfig,
    PositionConfig,
    TrainConfig,
)

config = Config(
    name="t5",
    model=ModelConfig(arch="encoder_decoder", d_model=128, n_layers=2, n_encoder_layers=2, n_heads=4,
                      n_kv_heads=4, vocab_size=2048, max_seq_len=128, position=PositionConfig(kind="t5"),
                      ffn=FFNConfig(activation="geglu")),
    data=DataConfig(corpus="stdlib", seq_len=128, batch_size=16, num_sentinels=32, noise_density=0.15,
                    mean_span_length=3.0, max_corpus_bytes=8_000_000, tokenizer_train_bytes=4_000_000),
    optim=OptimConfig(lr=1e-3, warmup_steps=20),
    train=TrainConfig(steps=200, eval_every=100, checkpoint_every=100),
    eval=EvalConfig(sample_tokens=0),
)
