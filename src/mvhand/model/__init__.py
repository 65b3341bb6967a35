"""The network, its losses, training samples, the training loop and batched inference."""
