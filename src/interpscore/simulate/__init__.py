"""Stage 3, simulate: simulated participants doing the IMI task on real stimuli, the embedded
default dataset (labelled `source: simulated`, never confused with human data)."""
