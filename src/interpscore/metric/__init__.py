"""Stage 3 (beside simulate), metric: backbones and their embedding cache, task tensors, heads,
checkpoints and the scorer. The inference path: nothing here imports Lightning or the training
code."""
