"""Last-layer retraining on cached embeddings: the fitting core, the method registry (LLR, DFR, CB-LLR, AFR), the job, and the through-network variant."""
