"""Datasets: the registry and standardized metadata, the real-dataset readers, the synthetic stand-ins, tokenizers and token caches, model-input readers, fixtures and the pre-flight check."""
