"""From results to the paper's outputs: tidy collectors, figures, tables, the paper-claims checkers."""
