"""Evaluate on the past, serve the present: refit the measured model on every matured label.

`run_training` measures a model trained on the oldest part of the snapshots (train), stopped
early and calibrated on the next (validation), and scored once on the newest (test). The
served model should not ignore the newest leads: after that measurement, the same settings
(LightGBM parameters, the number of trees early stopping chose) are refit on every snapshot
whose label has matured by the data end, train + validation + test, including those the split
left out because their window crossed a boundary. Nothing is held out any more, so its
calibration, tiers, 0-100 scale and MQL threshold come from the measured model's scores of the
test period: the newest rows a fit of this method had not seen.

The bundle says both windows (`training.measured_on`, `training.served`): "measured on leads
created X to Y by a model that never saw them; served model trained on leads up to Z".
"""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np

from features.contract import Dataset
from features.engine import snapshot_features
from features.snapshots import conversion_labels, matured_label_cutoff, snapshot_times
from features.spec import FeatureSpec
from model.bundle import ScoringModel, Tiers, content_hash, encode_matrix, model_family_of
from model.monitoring import reference_distribution
from training.candidates import cross_fit, fit_rounds
from training.config import TrainingConfig
from training.pipeline import FeatureBuilder, TrainingResult, category_levels
from training.selection_config import Candidate


def measured_window(result: TrainingResult, data: Dataset) -> dict[str, Any]:
    """The test period's leads: first and last creation time, snapshots."""
    created = data.leads.set_index("lead_id")["created_at"].reindex(result.test.snapshots["lead_id"].unique())
    return {
        "created_from": created.min().isoformat(),
        "created_to": created.max().isoformat(),
        "n_snapshots": int(len(result.test.snapshots)),
    }


def refit_on_matured(
    result: TrainingResult,
    data: Dataset,
    spec: FeatureSpec,
    config: TrainingConfig,
    build_features: FeatureBuilder = snapshot_features,
) -> ScoringModel:
    """The served model: the measured LightGBM settings refit on every matured snapshot.

    Args:
        result: The measured run (`run_training`).
        data: The data it was trained on.
        spec: Feature specification.
        config: Training settings (the same as the measured run's).
        build_features: Computes the snapshots' features (`snapshot_features`, or Dask's).

    Returns:
        A bundle-ready model whose `training.served.trained_through` is the matured-label
        cutoff (data end minus the horizon) and whose `training.measured_on` names the test
        period that measured the method.
    """
    measured = result.model
    cutoff = matured_label_cutoff(data.data_end, config.horizon_days)
    snaps = snapshot_times(data.leads, config.snapshot_offsets_days, cutoff)
    y = conversion_labels(snaps, data.leads, config.horizon_days)
    rows = build_features(data.leads, data.interactions, snaps, spec)
    names = spec.feature_names()
    levels = category_levels(rows, spec)
    matrix = encode_matrix(rows, names, levels)
    candidate = result.candidate or Candidate(family="lightgbm")
    trees = result.rounds or (measured.booster.current_iteration() if isinstance(measured.booster, lgb.Booster) else 0)
    # Calibrated as itself: the refit recipe cross-fitted on the latest leads (a lead's snapshots
    # in one block), not the measured model's test scores (other trees, another score scale).
    created = snaps["lead_id"].map(data.leads.set_index("lead_id")["created_at"])
    clock = (created - created.min()).dt.total_seconds().to_numpy(dtype=np.float64)
    calibration, losses, recent, p = cross_fit(candidate, trees, matrix, y, clock, snaps["lead_id"].to_numpy(), spec, levels, config)
    booster = fit_rounds(candidate, matrix, y, clock, spec, levels, config, trees)
    meta = measured.meta
    grid_share = float(meta.training.get("grid_mql_share_validation", 0.0))
    text = booster.model_to_string()
    served = {
        "trained_through": cutoff.isoformat(),
        "labels_through": data.data_end.isoformat(),
        "n_snapshots": int(len(snaps)),
        "n_leads": int(snaps["lead_id"].nunique()),
        "trees": int(trees),
        "refit": "every snapshot with a matured label (train, validation and test), the measured settings carried over",
    }
    update = {
        "model_family": model_family_of(booster),
        "model_version": f"{meta.trained_at[:10].replace('-', '')}-{content_hash(text.encode())[:8]}",
        "categorical_levels": levels,
        "calibration": calibration,
        "score_quantiles": np.quantile(p, np.linspace(0, 1, 101)).tolist(),
        "tiers": Tiers(hot=float(np.quantile(p, 1 - config.hot_share)),
                       warm=float(np.quantile(p, 1 - config.hot_share - config.warm_share))),
        "mql_probability": float(np.quantile(p, 1 - grid_share)) if grid_share > 0 else 1.0,
        "reference": reference_distribution(rows, p),
        "training": {**meta.training, "measured_model_version": meta.model_version, "calibration_log_loss": losses,
                     "measured_on": measured_window(result, data), "served": served},
    }  # fmt: skip
    # Fit and engagement are placed among the rows of the score scale, by the refit model's own contributions.
    served_model = ScoringModel(booster, meta.model_copy(update=update)).with_subscore_scale(matrix[recent])
    # Trend thresholds on the refit model's own 7-day score changes of the validation snapshots (`training.trend`).
    from training.trend import validation_trend_thresholds, with_trend_thresholds

    valid = result.valid.snapshots
    thresholds = validation_trend_thresholds(
        served_model, data, valid, served_model.encode(build_features(data.leads, data.interactions, valid, spec)), build_features
    )
    return with_trend_thresholds(served_model, thresholds)
