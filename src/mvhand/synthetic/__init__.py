"""The embedded synthetic world: subjects and motion, MANO-format model, rigs, renderer, datasets."""
