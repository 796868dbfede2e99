"""Stage 5 (beside train, zoo, study), leaderboard: entries, tracks, validation, scoring with the
evaluation's statistics, and the rendered page. Never trains, embeds or simulates."""
