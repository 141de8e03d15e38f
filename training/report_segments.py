"""The report's segments of the test period: the fit x engagement cells and the trend labels.

Each segment shows how many test snapshots (and leads) fall in it and how often they converted,
the evidence that the sub-scores and the trend sort leads by their chance of buying.
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from model.bundle import ScoringModel
from model.scoring import subscore_columns
from model.trend import TREND_LABELS

FIT_ROWS = ("A", "B", "C")  # top, middle, bottom third of fit
ENGAGEMENT_COLUMNS = ("1", "2", "3")  # top, middle, bottom third of engagement


def _segment(mask: np.ndarray, y: np.ndarray, lead_ids: np.ndarray) -> dict[str, Any]:
    return {
        "n_snapshots": int(mask.sum()),
        "n_leads": int(np.unique(lead_ids[mask]).size),
        "share": float(mask.mean()) if mask.size else float("nan"),
        "conversion_rate": float(y[mask].mean()) if mask.any() else float("nan"),
    }


def cell_table(model: ScoringModel, matrix: np.ndarray, y: np.ndarray, lead_ids: np.ndarray) -> list[list[dict[str, Any]]] | None:
    """The test period per fit x engagement cell: 3 rows (fit A, B, C) of 3 cells (engagement 1, 2, 3).

    Args:
        model: The model (its `meta.subscores` place the cells).
        matrix: The test snapshots' encoded features.
        y: Their labels.
        lead_ids: Their leads.

    Returns:
        Per cell `cell`, `n_snapshots`, `n_leads`, `share` (of snapshots) and `conversion_rate`;
        None for a bundle without the sub-score scale.
    """
    if model.meta.subscores is None or len(matrix) == 0:
        return None
    _fit, _engagement, cells = subscore_columns(model, model.fit_engagement_of(matrix), len(matrix))
    labels = np.asarray(cells.astype(object))
    return [[{"cell": f + e, **_segment(labels == f + e, y, lead_ids)} for e in ENGAGEMENT_COLUMNS] for f in FIT_ROWS]


def trend_table(trends: np.ndarray | None, y: np.ndarray, lead_ids: np.ndarray) -> list[dict[str, Any]] | None:
    """The test period per trend label, then the snapshots without one (leads younger than 7 days).

    Args:
        trends: Each test snapshot's label or None (`training.trend.snapshot_trends`); None: no thresholds.
        y: Their labels.
        lead_ids: Their leads.

    Returns:
        Per label `trend`, `n_snapshots`, `n_leads`, `share` (of all test snapshots) and
        `conversion_rate`; None without thresholds.
    """
    if trends is None:
        return None
    rows = [{"trend": label, **_segment(trends == label, y, lead_ids)} for label in TREND_LABELS]
    rows.append({"trend": "none (lead younger than 7 days)", **_segment(np.array([t is None for t in trends], dtype=bool), y, lead_ids)})
    return rows


def cells_chart(cells: list[list[dict[str, Any]]], svg: Any) -> str:
    """A 3 x 3 heat map of the cells' conversion rates, each annotated with its rate and snapshot count.

    Args:
        cells: `cell_table`'s rows.
        svg: The report's figure-to-SVG function (`training.report._svg`).
    """
    rates = np.array([[100 * c["conversion_rate"] for c in row] for row in cells])
    fig, ax = plt.subplots(figsize=(5.4, 4.2))
    image = ax.imshow(np.nan_to_num(rates), cmap="Blues", vmin=0)
    for i, row in enumerate(cells):
        for j, c in enumerate(row):
            dark = np.nan_to_num(rates[i, j]) > 0.6 * np.nanmax(rates)
            text = "n/a" if np.isnan(rates[i, j]) else f"{rates[i, j]:.1f} %"
            ax.text(j, i, f"{c['cell']}\n{text}\n{c['n_snapshots']:,} scored", ha="center", va="center", fontsize=8,
                    color="white" if dark else "#1d2733")  # fmt: skip
    ax.set_xticks(range(3), ["1 (high)", "2", "3 (low)"])
    ax.set_yticks(range(3), ["A (high)", "B", "C (low)"])
    ax.set(xlabel="Engagement third", ylabel="Fit third")
    ax.set_title("Conversion rate per fit x engagement cell", fontsize=10)
    fig.colorbar(image, ax=ax, label="Conversion rate (%)")
    return str(svg(fig, "Conversion rate per fit and engagement cell"))
