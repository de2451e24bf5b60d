"""ERM finetuning (paper Table 3): the training loop, balancing and group ratios, per-group metrics."""
