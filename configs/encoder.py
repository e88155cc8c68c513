"""Encoder-only masked-LM (BERT-style): bidirectional attention, 15% of tokens masked 80/10/10,
learned absolute positions, post-norm LayerNorm with GELU as in the original BERT recipe."""

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
    name="encoder",
    model=ModelConfig(arch="encoder", d_model=128, n_layers=4, n_heads=4, n_kv_heads=4, vocab_size=2048,
                      max_seq_len=128, position=PositionConfig(kind="learned"),
                      ffn=FFNConfig(activation="gelu", ratio=4.0), norm=NormConfig(kind="layernorm", placement="post"),
                      pooling="mean"),
    data=DataConfig(corpus="stdlib", seq_len=128, batch_size=16, special_tokens=("<|mask|>",), mlm_rate=0.15,
                    max_corpus_bytes=8_000_000, tokenizer_train_bytes=4_000_000),
    optim=OptimConfig(lr=1e-3, warmup_steps=20),
    train=TrainConfig(steps=200, eval_every=100, checkpoint_every=100),
    eval=EvalConfig(sample_tokens=0),
)
