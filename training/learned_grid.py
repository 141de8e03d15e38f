"""A point grid learned from the model: the model translated into the table sales teams know.

For each business driver, the leads are grouped by the driver's most telling feature (an
attribute's values, a behaviour count's or recency's buckets: `training.drivers.best_groups`)
and each group gets the average TreeSHAP contribution of the driver among its leads, in
log-odds. Points are those averages scaled:

    points = POINTS_PER_LOG_ODDS * (mean contribution of the group - the reference group's)

so **10 points = +1 log-odds = the odds of converting multiplied by e (about 2.7)**. The
reference group of a driver is the one a grid cannot name and that therefore scores 0: missing
values (an unknown attribute, "never" for days since an event), else the lowest bucket
(no such event, the smallest value). A lead's probability is read back from its total:

    probability ≈ calibration(intercept + points / POINTS_PER_LOG_ODDS)

where the intercept is the model's base value plus every driver's reference contribution and
`calibration` is the model's own (both recorded in the grid's description and in
`LearnedGrid`). The MQL threshold is the total at which the grid flags as many leads as the
model's MQL flag does. The result is a `features.grid.PointGrid`, written as YAML in the format
of `data/grids/*.yaml`, so the grid scorer runs it like a handwritten grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from features.engine import FeatureRows
from features.grid import GridRule, PointGrid
from features.labels import driver_title
from model.bundle import ScoringModel
from training.drivers import MIN_GROUP_ROWS, DriverContributions, Group, best_groups

POINTS_PER_LOG_ODDS = 10.0
# Drivers get rules, strongest first, until they carry this share of the model's total weight
# (mean |contribution|): the weakest drivers would add many one-point rules.
DRIVER_COVERAGE = 0.95
# Rows whose contributions are averaged: enough for stable group means, bounded in time.
MAX_FIT_ROWS = 20_000


@dataclass(frozen=True)
class LearnedGrid:
    """A grid learned from a model, with what its points mean.

    Attributes:
        grid: The point grid (scored by `PointGrid.score_frame` / `score_row`).
        intercept_log_odds: Log-odds of a lead with 0 points (before calibration).
        points_per_log_odds: Points for +1 log-odds.
        model_mql_share: Share of the fit rows the model flags as MQL, which the threshold matches.
        grid_mql_share: Share of the fit rows the learned grid flags as MQL.
        drivers: Per driver, the feature grouped by and the group means (for the comparison table).
    """

    grid: PointGrid
    intercept_log_odds: float
    points_per_log_odds: float
    model_mql_share: float
    grid_mql_share: float
    drivers: dict[str, dict[str, Any]]

    def log_odds(self, points: np.ndarray) -> np.ndarray:
        return self.intercept_log_odds + np.asarray(points, dtype=float) / self.points_per_log_odds

    def probability(self, model: ScoringModel, points: np.ndarray) -> np.ndarray:
        """Conversion probability of leads with these totals, through the model's calibration."""
        return model.meta.calibration.apply(self.log_odds(points))


def _take_rows(rows: FeatureRows, index: np.ndarray) -> FeatureRows:
    return FeatureRows(
        categorical={k: v[index] for k, v in rows.categorical.items()},
        numeric={k: v[index] for k, v in rows.numeric.items()},
    )


def _reference(groups: list[Group], column: np.ndarray) -> Group:
    """The group scored 0: missing values if any (a grid cannot name them), else the least
    favourable group, so that points are earned as in a handwritten grid."""
    for g in groups:
        if g.missing:
            return g
    return min(groups, key=lambda g: float(column[g.mask].mean()))


def _rule(group: Group, label: str, points: float) -> GridRule:
    if group.kind == "category":
        return GridRule(label=label, points=points, feature=group.feature, in_=[group.value])
    return GridRule(label=label, points=points, feature=group.feature, min=group.low, max=group.high)


def _threshold_for_share(points: np.ndarray, share: float) -> float:
    """The total whose "at least this" share of rows is closest to `share`."""
    candidates = np.unique(points)
    shares = np.array([np.mean(points >= t) for t in candidates])
    return float(candidates[int(np.argmin(np.abs(shares - share)))])


def sample_rows(
    rows: FeatureRows, matrix: np.ndarray, y: np.ndarray, max_rows: int = MAX_FIT_ROWS, seed: int = 0
) -> tuple[FeatureRows, np.ndarray, np.ndarray]:
    """At most `max_rows` of the rows (a seeded sample, in their order) to average over."""
    n = matrix.shape[0]
    if n <= max_rows:
        return rows, matrix, np.asarray(y)
    index = np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))
    return _take_rows(rows, index), matrix[index], np.asarray(y)[index]


def learn_grid(
    model: ScoringModel,
    rows: FeatureRows,
    contributions: DriverContributions,
    *,
    points_per_log_odds: float = POINTS_PER_LOG_ODDS,
    coverage: float = DRIVER_COVERAGE,
    min_rows: int = MIN_GROUP_ROWS,
    name: str = "learned",
) -> LearnedGrid:
    """Translate the model into a point grid from its average TreeSHAP contributions.

    Args:
        model: The trained model.
        rows: Feature values of the leads to average over (training and validation periods,
            never the test period on which the grid is then judged; `sample_rows` bounds them).
        contributions: `driver_contributions(model, model.encode(rows))`.
        points_per_log_odds: Scale of the points.
        coverage: Share of the total driver weight that gets rules (strongest drivers first).
        min_rows: A group with fewer leads gets no rule (its leads score 0 for the driver).
        name: The grid's name.

    Returns:
        The learned grid; its rules are ordered by driver weight, then group.
    """
    n = contributions.raw.shape[0]
    if n == 0:
        raise ValueError("learn_grid: no rows to learn from")
    spec = model.spec
    weights = np.abs(contributions.log_odds).mean(axis=0)
    rules: list[GridRule] = []
    intercept = contributions.base
    drivers: dict[str, dict[str, Any]] = {}
    order = np.argsort(-weights, kind="stable")
    # The fewest drivers that carry `coverage` of the total weight get rules; the others add
    # their average contribution to the intercept.
    kept = int(np.searchsorted(np.cumsum(weights[order]) / weights.sum(), coverage) + 1)
    for rank, k in enumerate(order):
        driver = contributions.drivers[k]
        column = contributions.log_odds[:, k]
        if rank >= kept:
            intercept += float(column.mean())
            continue
        feature, groups, share = best_groups(driver, contributions, rows, spec, min_rows)
        reference = _reference(groups, column)
        ref_mean = float(column[reference.mask].mean())
        intercept += ref_mean
        described = []
        for g in groups:
            mean = float(column[g.mask].mean())
            points = round(points_per_log_odds * (mean - ref_mean))
            written = g is not reference and not g.missing and int(g.mask.sum()) >= min_rows and points != 0
            if written:
                label = g.label(spec, "en")
                if any(rule.label == label for rule in rules):  # labels are a grid's keys
                    label = f"{label} ({g.feature})"
                rules.append(_rule(g, label, points))
            described.append({"group": g, "mean_log_odds": mean, "points": points if written else 0})
        drivers[driver] = {"feature": feature, "explained_share": share, "reference": reference, "groups": described}

    p_model = model.meta.calibration.apply(contributions.raw)
    model_share = float(np.mean(p_model >= model.meta.mql_probability))
    draft = PointGrid(name=name, mql_threshold=0, rules=rules)
    totals = draft.score_frame(rows.to_frame(spec))
    threshold = _threshold_for_share(totals, model_share)
    grid_share = float(np.mean(totals >= threshold))
    probability_at = model.meta.calibration.apply(intercept + np.array([0.0, threshold]) / points_per_log_odds)
    description = (
        f"Learned from model {model.meta.model_version}: points are the model's average TreeSHAP "
        f"contributions per attribute value and behaviour bucket, over {n} lead "
        f"snapshots before the test period.\n"
        f"{points_per_log_odds:g} points = +1 log-odds (odds of converting x2.7). A lead with 0 "
        f"points converts with probability {probability_at[0]:.1%}; at the MQL threshold of "
        f"{threshold:g} points, {probability_at[1]:.1%}.\n"
        f"probability = calibration({intercept:.3f} + points / {points_per_log_odds:g}), with the "
        f"model's calibration.\n"
        f"The MQL threshold flags {grid_share:.1%} of those leads; the model's MQL flag {model_share:.1%}.\n"
    )
    grid = PointGrid(name=name, description=description, mql_threshold=threshold, rules=rules)
    return LearnedGrid(grid, intercept, points_per_log_odds, model_share, grid_share, drivers)


def compare_with_grid(
    handwritten: PointGrid,
    learned: LearnedGrid,
    model: ScoringModel,
    rows: FeatureRows,
    contributions: DriverContributions,
    y: np.ndarray,
) -> list[dict[str, Any]]:
    """"Your grid gives demo request +40; the data says +X", for every handwritten rule.

    X is in learned-grid points (10 = +1 log-odds): the model's average contribution of the
    rule's driver among leads where the rule's condition holds minus among leads where it does
    not, times the scale. It is the learned points of exactly the rule's condition; the learned
    rules on the same driver are listed beside it.

    Args:
        handwritten: The sales team's grid.
        learned: From `learn_grid`.
        model: The model.
        rows, contributions: Leads to measure on (those `learn_grid` used) and their driver
            contributions.
        y: 1 where the lead converted, per row.

    Returns:
        One dict per handwritten rule, in order: label, feature, driver, grid_points,
        data_points (None when the condition holds for all or none of the leads), leads_matching,
        conversion_rate_matching, conversion_rate_others, learned_rules [{label, points}],
        explanation.
    """
    n = contributions.raw.shape[0]
    y = np.asarray(y, dtype=float)
    frame = rows.to_frame(model.spec)
    out = []
    for rule in handwritten.rules:
        if rule.feature not in frame.columns:
            raise ValueError(
                f"grid rule {rule.label!r}: feature {rule.feature!r} is not a feature of model "
                f"{model.meta.model_version}"
            )
        single = PointGrid(name="one-rule", mql_threshold=1, rules=[rule.model_copy(update={"points": 1.0})])
        fires = single.score_frame(frame[[rule.feature]]) > 0
        driver = next(d for d, features in contributions.features.items() if rule.feature in features)
        column = contributions.column(driver)
        matching = int(fires.sum())
        title = driver_title(driver, "en", model.spec).lower()
        learned_rules = [
            {"label": r.label, "points": r.points}
            for r in learned.grid.rules
            if rule.feature == r.feature or r.feature in contributions.features[driver]
        ]
        if 0 < matching < n:
            delta = float(column[fires].mean() - column[~fires].mean())
            data_points = round(learned.points_per_log_odds * delta)
            rate_in, rate_out = float(y[fires].mean()), float(y[~fires].mean())
            explanation = (
                f"{matching / n:.0%} of leads match; {rate_in:.1%} of them convert against "
                f"{rate_out:.1%} of the others. Everything else about the lead being taken into "
                f"account, the model's credit for {title} is {delta:+.2f} log-odds for them "
                f"compared with the others: {data_points:+d} point{'s' if abs(data_points) != 1 else ''}."
            )
        else:
            data_points, rate_in, rate_out = None, float("nan"), float("nan")
            explanation = f"{'all' if matching else 'none'} of the leads match this rule: the data cannot tell its weight."
        out.append(
            {
                "label": rule.label,
                "feature": rule.feature,
                "driver": driver,
                "grid_points": rule.points,
                "data_points": data_points,
                "leads_matching": matching,
                "conversion_rate_matching": rate_in,
                "conversion_rate_others": rate_out,
                "learned_rules": learned_rules,
                "explanation": explanation,
            }
        )
    return out
