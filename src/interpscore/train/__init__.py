"""Stage 5, train: the Lightning module and data module, `python train.py` (LightningCLI), and the
leave-one-model-out retraining."""
