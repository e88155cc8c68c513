"""A seconds-long config for tests and smoke runs: two layers of width 32 on a small stdlib slice."""

from lmx.config import Config, DataConfig, EvalConfig, ModelConfig, OptimConfig, TrainConfig

config = Config(
    name="tiny",
    model=ModelConfig(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=320, max_seq_len=64),
    data=DataConfig(corpus="stdlib", max_corpus_bytes=400_000, tokenizer_train_bytes=200_000,
                    seq_len=32, batch_size=4),
    optim=OptimConfig(lr=3e-3, warmup_steps=2),
    train=TrainConfig(steps=8, eval_every=4, eval_batches=2, checkpoint_every=4, log_every=2,
                      async_checkpointing=False),
    eval=EvalConfig(sample_prompts=("def ",), sample_tokens=8),
)
