"""Prefix-LM: one decoder stack whose attention is bidirectional inside a random per-example prefix
and causal after it; the loss covers only the suffix (Raffel et al. 2020, sec. 3.2.1)."""

from lmx.config import Config, DataConfig, EvalConfig, ModelConfig, OptimConfig, PositionConfig, TrainConfig

config = Config(
    name="prefix_lm",
    model=ModelConfig(arch="prefix_lm", d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=2048,
                      max_seq_len=128, position=PositionConfig(kind="rope")),
    data=DataConfig(corpus="stdlib", seq_len=128, batch_size=16, max_corpus_bytes=8_000_000,
                    tokenizer_train_bytes=4_000_000),
    optim=OptimConfig(lr=2e-3, warmup_steps=20),
    train=TrainConfig(steps=200, eval_every=100, checkpoint_every=100),
    eval=EvalConfig(sample_tokens=0),
)
