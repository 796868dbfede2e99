"""Stage 4, evaluation: agreement statistics (no torch), baselines, the harness that puts any
predictor against measured HIS, and the report."""
