"""Stage 3 (beside metric), simulate: simulated participants doing the IMI task on real stimuli,
the embedded default dataset (labelled `source: simulated`, never confused with human data)."""
