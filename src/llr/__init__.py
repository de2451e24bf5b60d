"""Reproduction of *On the Unreasonable Effectiveness of Last-Layer Retraining*.

All science lives in this package; the Snakemake workflow only wires its
commands (``python -m llr <command>``) into a DAG.
"""

__version__ = "0.1.0"
