"""Data layer, training, evaluation and robustness study (no Qt)."""
