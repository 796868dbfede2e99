"""Names the evaluation's choices are made of, importable without torch (the CLI builds its
choice lists from them)."""

SPLITS = ("test", "val", "all")  # what `evaluate --split` measures
# Built-in predictors a leaderboard entry or an evaluation can be made of.
BASELINES = ("mis", "stage_mis", "model_identity", "layer_depth", "constant")
# What every benchmark table shows: the head, MIS, its few-parameter peer, and two predictors
# that know only a unit's model (and difficulty) or its layer.
BENCHMARK_PREDICTORS = ("trained", "mis", "stage_mis", "model_identity", "layer_depth")
