"""Reports: the statistics of a run (``stats``), its plots (``plots``) and ``winnow report`` (``run``).

The functions the demo and the command use are re-exported here.
"""

from winnow.report.plots import plot, plot_best_of_n, plot_selected_vs_all
from winnow.report.run import rounds_to_report, run_report
from winnow.report.stats import (
    best_of_n_band,
    best_of_n_curve,
    best_of_n_kl,
    best_of_n_rows,
    completion_stats,
    distinct_n,
    duplicates,
    paired_bootstrap,
)

__all__ = [
    "best_of_n_band",
    "best_of_n_curve",
    "best_of_n_kl",
    "best_of_n_rows",
    "completion_stats",
    "distinct_n",
    "duplicates",
    "paired_bootstrap",
    "plot",
    "plot_best_of_n",
    "plot_selected_vs_all",
    "rounds_to_report",
    "run_report",
]
