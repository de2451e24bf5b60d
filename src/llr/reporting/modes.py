"""The ``llr plot <name>`` modes: each name maps to a function(inputs, outputs, params) of a
reporting module, imported on use (figures, Table 1, the claims, Figure 8's and the ablation's tables)."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from llr.errors import LLRError

PLOT_MODES: dict[str, str] = {
    **{f"fig{i}": f"llr.reporting.figures:fig{i}" for i in range(2, 9)},
    "ablation_caching": "llr.reporting.figures:ablation_caching",
    "table1": "llr.reporting.table1:table1",
    "paper_comparison": "llr.reporting.claims:paper_comparison",
    "fig8_table": "llr.reporting.tidy:fig8_table",
    "ablation_caching_table": "llr.reporting.tidy:ablation_caching_table",
}


def plot_mode(name: str) -> Callable[[list[str], list[str], dict], None]:
    """The function of plot mode ``name`` (PLOT_MODES)."""
    if name not in PLOT_MODES:
        raise LLRError(f"plot: unknown figure or table {name!r}; expected one of {', '.join(PLOT_MODES)}")
    module, func = PLOT_MODES[name].split(":")
    return getattr(importlib.import_module(module), func)
