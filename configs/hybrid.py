"""Hybrid stack: selective state-space (Mamba-style) layers interleaved with attention, pattern "MA"
repeated (every other layer is attention), as in Jamba-like hybrids; a causal decoder."""

from lmx.config import Config, DataConfig, ModelConfig, OptimConfig, SSMConfig, TrainConfig

config = Config(
    name="hybrid",
    model=ModelConfig(arch="decoder", d_model=128, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=2048,
                      max_seq_len=128, layer_pattern="MA", ssm=SSMConfig(state=16, expand=2, conv=4)),
    data=DataConfig(corpus="stdlib", seq_len=128, batch_size=16, max_corpus_bytes=8_000_000,
                    tokenizer_train_bytes=4_000_000),
    optim=OptimConfig(lr=2e-3, warmup_steps=20),
    train=TrainConfig(steps=200, eval_every=100, checkpoint_every=100),
)
