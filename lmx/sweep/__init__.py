"""Experiment sweeps: sweep files, launchers (local, ray, tpu), the results store, tables, plots and
comparisons. See docs/sweeps.md."""
