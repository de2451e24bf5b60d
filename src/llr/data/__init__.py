"""Datasets: the registry and standardized metadata, the real-dataset readers, the synthetic stand-ins, model-input caches, fixtures and the pre-flight check."""
