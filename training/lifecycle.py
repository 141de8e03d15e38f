"""Retraining lifecycle: the retrain tolerance, and a backtest of retraining over history.

A challenger replaces the champion only when the promotion gate (`training.gate`) lets it
through; `leadscore retrain` allows it to be `RETRAIN_TOLERANCE` ROC AUC below the current and
the best champion on the same most recent matured period.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from features.contract import DataEnd, Dataset
from features.engine import snapshot_features
from features.grid import PointGrid
from features.snapshots import conversion_labels, matured_label_cutoff, snapshot_times
from features.spec import FeatureSpec
from model.bundle import ScoringModel
from training.config import TrainingConfig
from training.hazard import paired_auc_difference
from training.pipeline import NotEnoughDataError, Progress, run_training
from training.refit import refit_on_matured

# A challenger may be this much below the champion's ROC AUC and still be promoted: the
# bootstrap intervals of a test period are several times wider, and fresher data is worth it.
# Measured from the best champion too (training.gate), so that retrains cannot ratchet down.
RETRAIN_TOLERANCE = 0.005


def as_of_history(data: Dataset, cutoff: pd.Timestamp) -> Dataset:
    """The data as it looked at `cutoff`: leads created by then, events and conversions up to then.

    An export taken at `cutoff` ends there, so `cutoff` is its data end.
    """
    leads = data.leads[data.leads["created_at"] <= cutoff].copy()
    leads["converted_at"] = leads["converted_at"].where(leads["converted_at"] <= cutoff)
    events = data.interactions[
        (data.interactions["occurred_at"] <= cutoff) & data.interactions["lead_id"].isin(leads["lead_id"])
    ].reset_index(drop=True)
    return Dataset(leads.reset_index(drop=True), events, data.quarantine.iloc[:0], data.report, DataEnd(cutoff, "backtest cutoff"), data.schema)


def _period_auc(y: np.ndarray, p: np.ndarray) -> float:
    return float(roc_auc_score(y, p)) if 0 < y.sum() < y.size else float("nan")


def _gain(name: str, y: np.ndarray, retrained: np.ndarray, other: np.ndarray, groups: np.ndarray, config: TrainingConfig) -> dict[str, float]:
    """`gain_over_<name>`: the retrained model's ROC AUC minus the other's on the period's rows, with its paired 95 % interval by lead."""
    if not 0 < y.sum() < y.size:
        gain = {"value": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    else:
        gain = paired_auc_difference(y, retrained, other, groups, n_bootstrap=config.n_bootstrap, seed=config.seed)
    key = f"gain_over_{name}"
    return {key: gain["value"], f"{key}_ci_low": gain["ci_low"], f"{key}_ci_high": gain["ci_high"]}


def _interval(row: dict[str, object], name: str) -> str:
    key = f"gain_over_{name}"
    return f"{row[key]:+.3f} [{row[key + '_ci_low']:+.3f}, {row[key + '_ci_high']:+.3f}]"


def backtest(
    data: Dataset,
    spec: FeatureSpec,
    config: TrainingConfig,
    grid: PointGrid,
    every_days: int,
    first_cutoff: pd.Timestamp | None = None,
    progress: Progress | None = None,
    train: Callable[..., object] = run_training,
    refit: Callable[..., ScoringModel] | None = refit_on_matured,
) -> pd.DataFrame:
    """Replay history: retrain at each step, score the next period.

    At each cutoff t (every `every_days`), a model is trained on the data as it was at t and,
    as `leadscore train` serves it, refit on every label matured by t. The next period's leads
    (created in [t, t + every)) are snapshotted, with labels matured by the end of the data, and
    scored by: the served model retrained at t, the same run's measured model (never refit on
    its newest leads), the served model of the first cutoff (never retrained), and the grid.

    Args:
        refit: The served model from a measured run (`refit_on_matured`); None scores the
            measured model as the retrained one.

    Returns:
        One row per period: `period_start`, `period_end`, `n_snapshots`, `n_conversions`,
        `retrained_auc`, `not_refit_auc`, `never_retrained_auc`, `grid_auc`, then the retrained
        model's paired gains on the period's rows, each with its 95 % interval by lead
        (`config.n_bootstrap` resamples; NaN without): `gain_over_never_retrained` (and
        `_ci_low`, `_ci_high`), `gain_over_not_refit` (the same).
    """
    say = progress or (lambda _msg: None)
    data_end = data.data_end
    last_label = matured_label_cutoff(data_end, config.horizon_days)
    start = first_cutoff or (data.leads["created_at"].min() + (last_label - data.leads["created_at"].min()) * 0.5)
    step = pd.Timedelta(days=every_days)
    first_model: ScoringModel | None = None
    rows = []
    cutoff = start
    while cutoff + step <= last_label:
        history = as_of_history(data, cutoff)
        try:
            result = train(history, spec, config, grid)
            measured: ScoringModel = result.model  # type: ignore[attr-defined]
            model = refit(result, history, spec, config) if refit is not None else measured
        except NotEnoughDataError as error:
            say(f"{cutoff:%Y-%m-%d}: skipped ({error})")
            cutoff += step
            continue
        first_model = first_model or model
        period = data.leads[(data.leads["created_at"] >= cutoff) & (data.leads["created_at"] < cutoff + step)]
        snaps = snapshot_times(period, config.snapshot_offsets_days, last_label)
        if snaps.empty:
            cutoff += step
            continue
        y = conversion_labels(snaps, data.leads, config.horizon_days)
        features = snapshot_features(data.leads, data.interactions, snaps, spec)
        p_retrained, p_not_refit, p_never = (m.probability(m.encode(features)) for m in (model, measured, first_model))
        groups = snaps["lead_id"].to_numpy()
        row = {
            "period_start": cutoff.date().isoformat(),
            "period_end": (cutoff + step).date().isoformat(),
            "n_snapshots": int(len(snaps)),
            "n_conversions": int(y.sum()),
            "retrained_auc": _period_auc(y, p_retrained),
            "not_refit_auc": _period_auc(y, p_not_refit),
            "never_retrained_auc": _period_auc(y, p_never),
            "grid_auc": _period_auc(y, grid.score_frame(features.to_frame(spec))),
            **_gain("never_retrained", y, p_retrained, p_never, groups, config),
            **_gain("not_refit", y, p_retrained, p_not_refit, groups, config),
        }
        rows.append(row)
        say(
            f"{row['period_start']}..{row['period_end']}: retrained {row['retrained_auc']:.3f}, "
            f"not refit on its newest leads {row['not_refit_auc']:.3f}, never retrained {row['never_retrained_auc']:.3f}, grid {row['grid_auc']:.3f}; "
            f"retrained - never retrained {_interval(row, 'never_retrained')}, retrained - not refit {_interval(row, 'not_refit')}"
        )
        cutoff += step
    if not rows:
        raise NotEnoughDataError(
            f"no backtest period fits between {start:%Y-%m-%d} and the last matured label {last_label:%Y-%m-%d}; "
            "use a shorter --every or more history"
        )
    return pd.DataFrame(rows)
