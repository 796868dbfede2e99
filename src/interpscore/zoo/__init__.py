"""Stage 5 (beside leaderboard, train, study), zoo: scans: every unit of many models scored by one
metric, with the report."""
