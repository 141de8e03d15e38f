"""Global drivers: which business drivers move the model's scores on recent leads, and which way.

The model's exact TreeSHAP contributions (log-odds) are summed per business driver
(`features.labels.driver_of`: "pricing page visits" gathers the 7/30/90-day and total counts and
the days since the last visit). For each driver this gives:

- its weight: the mean absolute contribution over the leads, in log-odds and in probability
  points (the unit of a lead's reasons: calibrated probability minus the probability with the
  driver's log-odds removed, times 100);
- its direction per group of leads: per value of an attribute ("Industry: software") and per
  bucket of a behaviour feature ("Pricing page visits in the last 30 days: 2–3"), the mean
  contribution (up or down) beside the group's conversion rate and the overall rate, as
  Dynamics 365's "attribute insights" do.

A behaviour driver is grouped by the one feature of the driver whose buckets explain most of
the driver's contribution (R² of the bucket means), so the table shows the count or recency
that matters. The learned point grid (`training.learned_grid`) uses the same groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from features.engine import FeatureRows
from features.labels import LANGUAGES, describe_bucket, describe_category, driver_of, driver_title
from features.spec import FeatureSpec
from features.vocabulary import LEAD_AGE_DAYS
from model.bundle import ScoringModel

GroupKind = Literal["category", "count", "days", "number"]

# Bucket edges (lower bounds) of whole-number features; a bucket smaller than `min_rows` is
# merged into its neighbour, so sparse counts end up with fewer, wider buckets.
COUNT_EDGES: tuple[float, ...] = (0, 1, 2, 4, 10, 30)
DAYS_EDGES: tuple[float, ...] = (0, 7, 30, 90, 180)
NUMBER_QUANTILES: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)
MIN_GROUP_ROWS = 30


@dataclass(frozen=True)
class Group:
    """The leads of one attribute value, one bucket ``low <= value < high``, or missing values.

    Attributes:
        feature: The feature the group is defined on.
        kind: How the feature is grouped.
        value: The category value (category groups only).
        low: Inclusive lower bound (None: unbounded or not a bucket).
        high: Exclusive upper bound (None: unbounded or not a bucket).
        missing: The group of leads whose value is missing (for days-since features: never).
        mask: Which rows are in the group.
    """

    feature: str
    kind: GroupKind
    value: str | None
    low: float | None
    high: float | None
    missing: bool
    mask: np.ndarray

    def label(self, spec: FeatureSpec, language: str = "en") -> str:
        """Plain words: "Director-level contact", "Demo requests since the lead was created: 1"."""
        if self.kind == "category":
            return describe_category(driver_of(self.feature, spec), None if self.missing else self.value, language)
        return describe_bucket(self.feature, self.low, self.high, spec, language)

    def condition(self) -> dict[str, Any]:
        """The group as a grid condition: {"in": [value]}, {"min": .., "max": ..} or {"missing": true}."""
        if self.missing:
            return {"missing": True}
        if self.kind == "category":
            return {"in": [self.value]}
        return {k: v for k, v in (("min", self.low), ("max", self.high)) if v is not None}


def feature_kind(feature: str, spec: FeatureSpec) -> GroupKind:
    """How a feature is grouped: category values, count buckets, days buckets or quantile buckets."""
    if feature in spec.categorical_features():
        return "category"
    if feature.startswith("days_since_") or feature == LEAD_AGE_DAYS:
        return "days"
    if feature.startswith("n_") or feature.startswith("active_days_"):
        return "count"
    return "number"


def _nice(x: float) -> float:
    """Two significant digits: bucket edges people can read."""
    if x == 0:
        return 0.0
    digits = 1 - int(np.floor(np.log10(abs(x))))
    return float(round(x, digits))


def _ladder(values: np.ndarray, edges: Sequence[float], min_rows: int) -> list[tuple[float | None, float | None]]:
    """Buckets [edge_i, edge_i+1) of non-missing values, small ones merged into a neighbour."""
    counts = [
        int(np.sum((values >= lo) & (values < hi)))
        for lo, hi in zip(edges, [*edges[1:], np.inf], strict=True)
    ]
    merged: list[list[float]] = []  # [low, high, rows]
    for lo, hi, n in zip(edges, [*edges[1:], np.inf], counts, strict=True):
        if merged and merged[-1][2] < min_rows:
            merged[-1][1], merged[-1][2] = hi, merged[-1][2] + n
        else:
            merged.append([lo, hi, n])
    if len(merged) > 1 and merged[-1][2] < min_rows:
        last = merged.pop()
        merged[-1][1], merged[-1][2] = last[1], merged[-1][2] + last[2]
    buckets: list[tuple[float | None, float | None]] = []
    for i, (lo, hi, rows_in) in enumerate(merged):
        if rows_in == 0:
            continue
        low = None if (i == 0 and lo == -np.inf) else float(lo)
        buckets.append((low, None if hi == np.inf else float(hi)))
    return buckets


def feature_groups(
    feature: str, rows: FeatureRows, spec: FeatureSpec, min_rows: int = MIN_GROUP_ROWS
) -> list[Group]:
    """Groups of the rows by one feature: its values (categories) or buckets (numbers).

    Args:
        feature: A feature of `spec`.
        rows: The leads' feature values.
        spec: Feature specification.
        min_rows: Buckets with fewer rows are merged into a neighbour (categories are kept).

    Returns:
        The groups, every row in exactly one; categories by decreasing size, buckets in order,
        the missing group (if any row is missing) last.
    """
    kind = feature_kind(feature, spec)
    groups: list[Group] = []
    if kind == "category":
        values = rows.categorical[feature]
        missing = np.array([v is None for v in values], dtype=bool)
        levels, counts = np.unique(values[~missing].astype(str), return_counts=True)
        for level in levels[np.argsort(-counts, kind="stable")]:
            groups.append(Group(feature, kind, str(level), None, None, False, (values == level) & ~missing))
    else:
        values = rows.numeric[feature]
        missing = np.isnan(values)
        present = values[~missing]
        if kind == "count":
            edges: Sequence[float] = COUNT_EDGES
        elif kind == "days":
            edges = DAYS_EDGES
        else:
            cuts = sorted({_nice(q) for q in np.quantile(present, NUMBER_QUANTILES)}) if present.size else []
            edges = [-np.inf, *[c for c in cuts if c > present.min()]] if present.size else [-np.inf]
        for low, high in _ladder(present, edges, min_rows):
            mask = ~missing
            if low is not None:
                mask = mask & (values >= low)
            if high is not None:
                mask = mask & (values < high)
            groups.append(Group(feature, kind, None, low, high, False, mask))
    if missing.any():
        groups.append(Group(feature, kind, None, None, None, True, missing))
    return groups


def explained_share(contribution: np.ndarray, groups: Sequence[Group]) -> float:
    """R² of a driver's contribution by group means: how well the groups summarise it."""
    total = float(np.sum((contribution - contribution.mean()) ** 2))
    if total == 0:
        return 0.0
    residual = sum(float(np.sum((contribution[g.mask] - contribution[g.mask].mean()) ** 2)) for g in groups if g.mask.any())
    return 1.0 - residual / total


@dataclass(frozen=True)
class DriverContributions:
    """TreeSHAP log-odds summed per driver, for a set of rows.

    Attributes:
        drivers: Driver names, in the order of the feature spec.
        log_odds: (n_rows, n_drivers) contributions.
        raw: (n_rows,) the model's raw score (base value plus all contributions).
        base: The model's base value (log-odds of the average training lead).
        features: Driver -> its features, in model order.
    """

    drivers: list[str]
    log_odds: np.ndarray
    raw: np.ndarray
    base: float
    features: dict[str, list[str]]

    def column(self, driver: str) -> np.ndarray:
        return self.log_odds[:, self.drivers.index(driver)]


def driver_contributions(model: ScoringModel, matrix: np.ndarray) -> DriverContributions:
    """Per-driver TreeSHAP log-odds of every row of a model matrix."""
    contrib = model.contributions(matrix)
    features: dict[str, list[str]] = {}
    for name in model.feature_names:
        features.setdefault(driver_of(name, model.spec), []).append(name)
    drivers = list(features)
    per_driver = np.zeros((contrib.shape[0], len(drivers)))
    for j, name in enumerate(model.feature_names):
        per_driver[:, drivers.index(driver_of(name, model.spec))] += contrib[:, j]
    base = float(contrib[0, -1]) if contrib.shape[0] else 0.0
    return DriverContributions(drivers, per_driver, contrib.sum(axis=1), base, features)


def probability_points(model: ScoringModel, contributions: DriverContributions) -> np.ndarray:
    """(n_rows, n_drivers) probability points each driver adds to each row's probability.

    Points = 100 * (calibrated probability - probability with the driver's log-odds removed),
    the unit of `ScoringModel.reasons`.
    """
    calibrate = model.meta.calibration.apply
    full = calibrate(contributions.raw)
    without = calibrate((contributions.raw[:, None] - contributions.log_odds).ravel())
    return 100.0 * (full[:, None] - without.reshape(contributions.log_odds.shape))


def best_groups(
    driver: str,
    contributions: DriverContributions,
    rows: FeatureRows,
    spec: FeatureSpec,
    min_rows: int = MIN_GROUP_ROWS,
) -> tuple[str, list[Group], float]:
    """The driver's feature whose groups explain most of its contribution.

    Returns:
        (feature, its groups, R² of the driver's contribution by those groups).
    """
    column = contributions.column(driver)
    best: tuple[str, list[Group], float] | None = None
    for feature in contributions.features[driver]:
        groups = feature_groups(feature, rows, spec, min_rows)
        share = explained_share(column, groups)
        if best is None or share > best[2] + 1e-9:
            best = (feature, groups, share)
    if best is None:
        raise ValueError(f"driver {driver!r} has no feature")
    return best


def global_drivers(
    model: ScoringModel,
    rows: FeatureRows,
    matrix: np.ndarray,
    y: np.ndarray,
    *,
    period: dict[str, Any] | None = None,
    min_rows: int = MIN_GROUP_ROWS,
) -> dict[str, Any]:
    """What drives the model's scores on a set of leads, as a JSON-able dict (importance.json).

    Args:
        model: The trained model.
        rows: Feature values of the leads (usually the test period: the most recent leads).
        matrix: `model.encode(rows)`.
        y: 1 where the lead converted within the horizon, per row.
        period: Where the rows come from (e.g. {"name": "test", "from": "2025-04-01"}).
        min_rows: Smallest bucket of a behaviour feature.

    Returns:
        {"model_version", "period", "n_rows", "n_leads"?, "conversion_rate", "units", "drivers": [
        {"driver", "title": {en, fr}, "kind", "mean_abs_log_odds", "mean_abs_points",
        "share_of_total", "grouped_by", "explained_share", "pushes_up": [labels],
        "pushes_down": [labels], "groups": [{"label": {en, fr}, "condition", "rows",
        "share_of_rows", "conversion_rate", "rate_vs_overall", "mean_log_odds", "mean_points",
        "direction"}]}]}, drivers by decreasing weight.
    """
    y = np.asarray(y, dtype=float)
    if len(y) != matrix.shape[0]:
        raise ValueError(f"global_drivers: {matrix.shape[0]} rows in the matrix but {len(y)} labels")
    if len(y) == 0:
        raise ValueError("global_drivers: no rows")
    contributions = driver_contributions(model, matrix)
    points = probability_points(model, contributions)
    overall = float(y.mean())
    weights = np.abs(contributions.log_odds).mean(axis=0)
    spec = model.spec
    out: list[dict[str, Any]] = []
    for k in np.argsort(-weights, kind="stable"):
        driver = contributions.drivers[k]
        column, driver_points = contributions.log_odds[:, k], points[:, k]
        feature, groups, share = best_groups(driver, contributions, rows, spec, min_rows)
        described: list[dict[str, Any]] = []
        for g in groups:
            n = int(g.mask.sum())
            rate = float(y[g.mask].mean())
            # Rounded once, so that the direction and the figure shown never disagree.
            mean = round(float(column[g.mask].mean()), 4)
            described.append(
                {
                    "label": {lang: g.label(spec, lang) for lang in LANGUAGES},
                    "condition": g.condition(),
                    "rows": n,
                    "share_of_rows": round(n / len(y), 4),
                    "conversion_rate": round(rate, 4),
                    "rate_vs_overall": round(rate / overall, 3) if overall > 0 else None,
                    "mean_log_odds": mean,
                    "mean_points": round(float(driver_points[g.mask].mean()), 3),
                    "direction": "up" if mean > 0 else ("down" if mean < 0 else "none"),
                }
            )
        # Groups too small to say anything stay in the table but not in the summary lists.
        sizable = [d for d in described if d["rows"] >= min_rows]
        out.append(
            {
                "driver": driver,
                "title": {lang: driver_title(driver, lang, spec) for lang in LANGUAGES},
                "kind": "attribute" if driver in spec.categorical_features() or driver in spec.numeric else "behaviour",
                "mean_abs_log_odds": round(float(weights[k]), 4),
                "mean_abs_points": round(float(np.abs(driver_points).mean()), 3),
                "share_of_total": round(float(weights[k] / weights.sum()), 4) if weights.sum() > 0 else 0.0,
                "grouped_by": feature,
                "explained_share": round(share, 3),
                "pushes_up": [d["label"]["en"] for d in sorted(sizable, key=lambda d: -d["mean_log_odds"]) if d["direction"] == "up"],
                "pushes_down": [d["label"]["en"] for d in sorted(sizable, key=lambda d: d["mean_log_odds"]) if d["direction"] == "down"],
                "groups": described,
            }
        )
    return {
        "model_version": model.meta.model_version,
        "period": period or {},
        "n_rows": int(len(y)),
        "conversion_rate": round(overall, 4),
        "units": {
            "mean_abs_log_odds": "average absolute TreeSHAP contribution of the driver, in log-odds",
            "mean_abs_points": "average absolute change in conversion probability due to the driver, "
            "in probability points (0-100): calibrated probability minus the probability with the "
            "driver's log-odds removed, times 100",
            "mean_points": "the same, signed, averaged over the group's leads",
            "rate_vs_overall": "the group's conversion rate divided by the rate of all these leads",
        },
        "drivers": out,
    }
