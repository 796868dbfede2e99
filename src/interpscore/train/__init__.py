"""Stage 5 (beside leaderboard, zoo, study), train: the Lightning module and data module, `python
train.py` (LightningCLI), and the leave-one-model-out retraining."""

import logging


class _NoAdvertising(logging.Filter):
    """Lightning's tips to install its cloud products say nothing about a run."""

    def filter(self, record):
        return not str(record.getMessage()).startswith("💡 Tip")


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoAdvertising())
