"""Stage 1, data: the IMI release (download, responses, exclusions, image layouts) into a prepared
dataset. Builds no network: nothing here imports torch, timm or the stimulus code."""
