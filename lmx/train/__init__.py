"""Training: optimizer, loss, pure step functions, checkpoints, metrics and the loop."""
