"""Training data and schedules: the column-file converter, the mention augmenter, the LR schedule."""
