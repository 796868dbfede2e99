"""Stage 5 (beside leaderboard, train, zoo), study: the browser study: build a jsPsych 8 page of
the IMI 2-AFC task for chosen units (`build_study`), serve it and keep each participant's
session (`serve_study`, `StudyServer`). Sessions are read back by `interpscore.data.sessions`
(through `prepare`)."""

from .build import build_study
from .serve import StudyServer, serve_study

__all__ = ["build_study", "serve_study", "StudyServer"]
