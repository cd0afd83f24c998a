"""Segmentation architectures, the model registry and the checkpoint format (no Qt)."""
