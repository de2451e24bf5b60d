"""Last-layer retraining (paper sections 3.1-3.2): the fitting core on cached embeddings, the method
registry, the built-in methods (LLR, DFR, CB-LLR, AFR), the job and the through-network variant."""

# Register the built-in methods (in this order) whenever any llr.lastlayer module is imported.
from llr.lastlayer import methods  # noqa: F401, I001
from llr.lastlayer import afr  # noqa: F401, E402
