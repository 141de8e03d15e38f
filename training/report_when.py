"""The report's "When" section: how soon leads convert, and how well the hazard says so.

From the measured hazard's test-period figures (`training.hazard.evaluate_hazard`, kept in the
bundle as `hazard.metrics`): per horizon (7, 30 days and the model's horizon), the ROC AUC of the
hazard's P(within t) beside the main model's horizon probability and, on simulated data, the
oracle's, with 95 % intervals and the paired difference; and the share of test leads converted by
each day beside the hazard's mean P(within that day) (its calibration over time).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

SCORER_NAMES = {"hazard": "Timing model (hazard)", "model": "Main model's probability", "oracle": "Oracle (simulated truth)"}
SCORER_COLOURS = {"hazard": "#1f6fb4", "model": "#e08a00", "oracle": "#9aa5b1"}
CURVE_LABEL = "When leads convert: share converted by day, observed and predicted"
AUC_LABEL = "Timing model and main model: ROC AUC per horizon"


@dataclass(frozen=True)
class WhenSection:
    """What the report shows of the timing model (all of it from the test period).

    Attributes:
        horizons: Per horizon: `days`, `n_snapshots`, `n_conversions`, then per scorer (`hazard`,
            `model`, `oracle` when known) `{value, ci_low, ci_high}` of the ROC AUC, and
            `difference`, the hazard's minus the main model's (paired bootstrap).
        integrated_brier: `days`, `n_snapshots`, `hazard` (and `oracle`): `{value, ci_low, ci_high}`.
        curve: `days`, `observed` and the scorers' mean P(within day), on the integrated Brier's rows.
    """

    horizons: list[dict[str, Any]]
    integrated_brier: dict[str, Any]
    curve: dict[str, list[float]]


def when_section(metrics: dict[str, Any] | None) -> WhenSection | None:
    """The section from the hazard's metrics; None without them (no hazard, or one fit before the curve was kept)."""
    if not metrics or "curve" not in metrics:
        return None
    horizons = []
    for t, entry in metrics["horizons"].items():
        row: dict[str, Any] = {"days": t, "n_snapshots": entry["n_snapshots"], "n_conversions": entry["n_conversions"],
                               "difference": entry["hazard_minus_model_roc_auc"]}  # fmt: skip
        row.update({scorer: entry[scorer]["roc_auc"] for scorer in SCORER_NAMES if scorer in entry})
        horizons.append(row)
    return WhenSection(horizons=horizons, integrated_brier=metrics["integrated_brier"], curve=metrics["curve"])


def when_curve_chart(section: WhenSection, svg: Callable[[plt.Figure, str], str]) -> str:
    """The share of test leads converted by each day after scoring, beside the mean predicted P(within day)."""
    curve = section.curve
    days = np.asarray(curve["days"])
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    ax.plot(days, 100 * np.asarray(curve["observed"]), color="#222222", lw=2.2, label="Observed")
    for scorer in ("hazard", "oracle"):
        if scorer in curve:
            ax.plot(days, 100 * np.asarray(curve[scorer]), color=SCORER_COLOURS[scorer], lw=1.6,
                    ls="-" if scorer == "hazard" else "--", label=f"{SCORER_NAMES[scorer]}, mean predicted")  # fmt: skip
    for t in section.horizons:
        ax.axvline(float(t["days"]), color="#dddddd", lw=0.8, zorder=0)
    ax.set_xlim(0, float(days[-1]))
    ax.set_ylim(0, None)
    ax.set_xlabel("Days after the lead was scored")
    ax.set_ylabel("Converted by then (%)")
    ax.set_title("When scored leads convert (test period)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return svg(fig, CURVE_LABEL)


def when_auc_chart(section: WhenSection, svg: Callable[[plt.Figure, str], str]) -> str:
    """Per horizon, each scorer's ROC AUC for "converts within t days" with its 95 % interval, as grouped bars."""
    scorers = [s for s in SCORER_NAMES if s in section.horizons[0]]
    width = 0.8 / len(scorers)
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    base = np.arange(len(section.horizons))
    bottom = max(0.5, min(float(np.nanmin([h[s]["ci_low"] for s in scorers])) for h in section.horizons) - 0.03)
    for i, scorer in enumerate(scorers):
        stats = [h[scorer] for h in section.horizons]
        values = np.array([s["value"] for s in stats])
        errors = np.nan_to_num(np.array([[v - s["ci_low"], s["ci_high"] - v] for v, s in zip(values, stats, strict=True)]).T)
        x = base + (i - (len(scorers) - 1) / 2) * width
        ax.bar(x, values, width=width, color=SCORER_COLOURS[scorer], yerr=errors, capsize=3, label=SCORER_NAMES[scorer])
        for xi, v in zip(x, values, strict=True):  # each value written inside its bar, clear of the interval
            ax.text(xi, bottom + 0.004, f"{v:.3f}", ha="center", va="bottom", fontsize=7, color="white")
    ax.set_xticks(base, [f"within {h['days']} days" for h in section.horizons])
    ax.set_ylim(bottom, 1.0)
    ax.set_ylabel("ROC AUC (test period)")
    ax.set_title("Who converts within 7, 30 and the horizon's days", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    return svg(fig, AUC_LABEL)
