"""The training loop, the overfit-one-batch check, baselines, metrics and hyperparameter search."""
