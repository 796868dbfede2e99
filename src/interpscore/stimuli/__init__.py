"""Stage 2, stimuli: the networks whose units are studied, image pools, the activation pass,
exemplar selection the IMI way, the stimulus store, and experiment export."""
