"""mvhand."""
