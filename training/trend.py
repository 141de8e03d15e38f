"""Trend thresholds set on validation, and the trend of evaluation snapshots (`model.trend`).

A snapshot (lead, as_of) is scored again 7 days before its `as_of` from the same point-in-time
features (`features.engine`: its events after that instant unseen), when its lead existed then.
On the validation snapshots, the distribution of those 7-day changes sets the thresholds
(`model.trend.trend_thresholds_from_changes`); on the test snapshots, the labels show in the
report how often improving, steady and declining leads converted.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.contract import Dataset
from features.engine import engagement_weight, snapshot_features
from features.spec import FeatureSpec
from features.vocabulary import (
    ACTIVE_DAYS_30D,
    ACTIVE_DAYS_TOTAL,
    ENGAGEMENT_DECAYED,
    EVENTS_TOTAL,
    count_feature,
    recency_feature,
)
from model.bundle import ScoringModel
from model.trend import TREND_LABEL_DAYS, TREND_LABELS, TrendThresholds, trend_thresholds_from_changes
from training.pipeline import FeatureBuilder


def scores_before(
    model: ScoringModel,
    data: Dataset,
    snapshots: pd.DataFrame,
    days: float,
    build_features: FeatureBuilder = snapshot_features,
) -> np.ndarray:
    """Each snapshot's 0-100 score `days` before its `as_of`, from the lead's history cut there.

    Args:
        model: The model whose scores they are.
        data: The leads and interactions the snapshots come from.
        snapshots: `lead_id`, `as_of`.
        days: How long before.
        build_features: As `training.pipeline.run_training`'s.

    Returns:
        int per snapshot; -1 where the lead was created after that instant (no score then).
    """
    before = snapshots["as_of"] - pd.Timedelta(days=days)
    created = snapshots["lead_id"].map(data.leads.set_index("lead_id")["created_at"])
    existed = np.flatnonzero((created <= before).to_numpy())
    scores = np.full(len(snapshots), -1, dtype=np.int64)
    if existed.size:
        past = pd.DataFrame({"lead_id": snapshots["lead_id"].to_numpy()[existed], "as_of": before.to_numpy()[existed]})
        matrix = model.encode(build_features(data.leads, data.interactions, past, model.spec))
        scores[existed] = model.score_0_100(model.probability(matrix))
    return scores


def validation_trend_thresholds(
    model: ScoringModel, data: Dataset, valid: pd.DataFrame, valid_matrix: np.ndarray, build_features: FeatureBuilder = snapshot_features
) -> TrendThresholds | None:
    """The thresholds from the 7-day score changes of the validation snapshots whose lead existed 7 days before.

    Args:
        model: The model to be served with them (its scores, its 0-100 scale).
        data: The training data.
        valid: The validation snapshots (`lead_id`, `as_of`).
        valid_matrix: Their encoded features at `as_of`.
        build_features: As `training.pipeline.run_training`'s.

    Returns:
        The thresholds; None for a static model (no behaviour: nothing changes with time) or
        when no validation lead existed 7 days before its snapshot.
    """
    if not model.spec.interactions:
        return None
    now = model.score_0_100(model.probability(valid_matrix))
    before = scores_before(model, data, valid, TREND_LABEL_DAYS, build_features)
    return trend_thresholds_from_changes((now - before)[before >= 0])


def with_trend_thresholds(model: ScoringModel, thresholds: TrendThresholds | None) -> ScoringModel:
    """This model with `meta.trend` set (None: its scores have no trend)."""
    return ScoringModel(model.booster, model.meta.model_copy(update={"trend": thresholds}), model.hazard)


def snapshot_trends(
    model: ScoringModel, data: Dataset, snapshots: pd.DataFrame, matrix: np.ndarray, build_features: FeatureBuilder = snapshot_features
) -> np.ndarray | None:
    """The trend label of each snapshot (None where its lead did not exist 7 days before); None without thresholds.

    Args:
        model: A model with `meta.trend`.
        data: The data the snapshots come from.
        snapshots: `lead_id`, `as_of`.
        matrix: Their encoded features at `as_of`.
        build_features: As `training.pipeline.run_training`'s.
    """
    thresholds = model.meta.trend
    if thresholds is None:
        return None
    now = model.score_0_100(model.probability(matrix))
    codes = thresholds.label_codes(now, scores_before(model, data, snapshots, TREND_LABEL_DAYS, build_features))
    labels = np.array([*TREND_LABELS, None], dtype=object)
    return labels[codes]  # code -1 takes the None at the end


def positive_signal_features(spec: FeatureSpec, event_type: str) -> tuple[list[str], list[str]]:
    """The features one more event of `event_type` (at or before `as_of`, without properties) can move, by direction.

    Returns:
        (features it can only raise: the type's counts, the total count, the active days, the decayed engagement when the type weighs more than 0; features it can
        only lower: the days since the type's last event, the engagement when the type weighs less).
    """
    up = [count_feature(event_type, w) for w in spec.windows_days] + [count_feature(event_type, None)]
    up += [EVENTS_TOTAL, ACTIVE_DAYS_30D, ACTIVE_DAYS_TOTAL]
    down = [recency_feature(event_type)]
    weight = engagement_weight(event_type, spec)
    if weight:
        (up if weight > 0 else down).append(ENGAGEMENT_DECAYED)
    return up, down


def positive_signal_types(model: ScoringModel) -> list[str]:
    """The interaction types that are positive signals for this model: one more of them may never lower its score.

    A type is one when the booster's monotone constraints (`training.lightgbm.monotone_increasing`
    and `monotone_decreasing`, read from the model itself, not the config) are +1 on every feature
    an event of it raises and -1 on its recency (`positive_signal_features`). A linear model, or a
    forest trained without such constraints, has none.
    """
    if not isinstance(model.booster, lgb.Booster):
        return []
    constraints = model.booster.dump_model().get("monotone_constraints") or []
    if not constraints:
        return []
    direction = dict(zip(model.feature_names, constraints, strict=True))
    positive = []
    for event_type in model.spec.interaction_types:
        up, down = positive_signal_features(model.spec, event_type)
        if all(direction.get(f) == 1 for f in up) and all(direction.get(f) == -1 for f in down):
            positive.append(event_type)
    return positive
