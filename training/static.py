"""Training on a static export: one row per lead, the outcome as exported, no timestamps.

Without time there are no snapshots and no matured-label windows, so evaluation is:

* an **ordered split** when the export has an order column (`data.leads.order`, e.g. a lead
  number growing with acquisition): the last `test_fraction` of leads by that column are the
  test set, the closest such an export gets to "train on the past, test on the future";
* otherwise **stratified 5-fold cross-validation**: every lead is scored once by a model that
  did not see it.

In both, the model, the point grid and the logistic regression are scored on the same rows.
Each LightGBM fit chooses its number of trees by early stopping on an inner validation part of
its training rows (the last `valid_fraction` by order, or a stratified random part), is refit on
all its training rows with that many trees, and is calibrated on scores of that same recipe for
rows it had not seen (cross-fitted on the latest rows, `training.crossfit`): the booster that is
scored is the one whose calibration was fit. The bundle's model is the ordered split's, or, with
cross-validation, one fit the same way on every lead. Either way it is a standard bundle:
`leadscore score` and the service use it, with an empty behaviour block.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split
from threadpoolctl import threadpool_limits

from features.contract import StaticDataset
from features.engine import FeatureRows, lead_attribute_rows
from features.grid import PointGrid
from features.schema import lead_schema_for
from features.spec import FeatureSpec
from model.bundle import MISSING_LEVEL, BundleMeta, Calibration, ScoringModel, Tiers, content_hash, encode_matrix, model_family_of
from training.config import TrainingConfig
from training.crossfit import cross_fitted_raw, latest_blocks
from training.metrics import scorer_metrics
from training.pipeline import (
    NotEnoughDataError,
    Progress,
    _fit_one,
    _logistic_frame,
    _take,
    category_levels,
    check_enough,
    fit_calibration,
    lightgbm_params,
    logistic_baseline,
)

N_FOLDS = 5
MIN_LEADS = 200
MIN_CONVERSIONS = 10 * N_FOLDS  # ten per test fold
MIN_TEST_LEADS = 100
MIN_TEST_CONVERSIONS = 10
STATIC_SCORERS = ("model", "point_grid", "logistic_regression")
# A static export is small: below this many rows one LightGBM thread is faster than several
# (OpenMP threads spin-waiting on a busy 2-core machine made a 500-row fit 20x slower).
ONE_THREAD_BELOW_ROWS = 100_000
STATIC_ADVICE = "Export more leads (a static export needs a few hundred, with conversions among them)."


@dataclass(frozen=True)
class EvaluationPlan:
    """Which rows each model trains on and is scored on.

    Attributes:
        kind: "ordered_split" or "cross_validation".
        splits: (train positions, test positions) per fold; one pair for an ordered split.
        description: In words, for reports ("last 20 % by Lead Number (from 655000)").
    """

    kind: str
    splits: list[tuple[np.ndarray, np.ndarray]]
    description: str


def evaluation_plan(
    data: StaticDataset,
    config: TrainingConfig,
    *,
    order_name: str = "order",
    twin_groups: np.ndarray | None = None,
) -> EvaluationPlan:
    """An ordered split when the leads have an order, else stratified 5-fold cross-validation.

    Args:
        data: The validated static export.
        config: `test_fraction` and `seed`.
        order_name: The order column's name in the user's export, for the description.
        twin_groups: Per lead, a group id shared by near-duplicate leads (-1 for none);
            cross-validation then keeps each group in one fold.

    Raises:
        NotEnoughDataError: Too few leads or conversions, or a test part too small.
    """
    leads = data.leads
    y = leads["converted"].to_numpy()
    check_enough("the export", _labelled(y), MIN_LEADS, MIN_CONVERSIONS, unit="leads", advice=STATIC_ADVICE)
    if data.has_order:
        order = leads["order"].to_numpy()
        ranked = np.argsort(order, kind="stable")
        n_test = int(round(len(ranked) * config.test_fraction))
        train, test = np.sort(ranked[: len(ranked) - n_test]), np.sort(ranked[len(ranked) - n_test :])
        check_enough(
            f"the test part (last {config.test_fraction:.0%} by {order_name})",
            _labelled(y[test]),
            MIN_TEST_LEADS,
            MIN_TEST_CONVERSIONS,
            unit="leads",
            advice=f"Export more leads or raise training.test_fraction (now {config.test_fraction:g}).",
        )
        first = order[ranked[len(ranked) - n_test]]
        return EvaluationPlan(
            "ordered_split",
            [(train, test)],
            f"ordered split: test = last {config.test_fraction:.0%} by {order_name} (from {first:g}), {len(test)} leads",
        )
    if twin_groups is not None and (twin_groups >= 0).any():
        # Singletons get their own group; twins share one, so they land in the same fold.
        groups = np.where(twin_groups >= 0, twin_groups, twin_groups.max() + 1 + np.arange(len(y)))
        folds = StratifiedGroupKFold(n_splits=N_FOLDS, shuffle=True, random_state=config.seed)
        splits = list(folds.split(np.zeros(len(y)), y, groups))
        how = f"stratified {N_FOLDS}-fold cross-validation, near-duplicate leads kept in one fold"
    else:
        folds = StratifiedKFold(n_splits=N_FOLDS, shuffle=True, random_state=config.seed)
        splits = list(folds.split(np.zeros(len(y)), y))
        how = f"stratified {N_FOLDS}-fold cross-validation (no order column)"
    return EvaluationPlan("cross_validation", splits, how)


def _labelled(y: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"label": y})


def static_category_levels(rows: FeatureRows, spec: FeatureSpec) -> dict[str, list[str]]:
    """Training levels of each category, with `MISSING_LEVEL` when some values are missing.

    In an export a field left empty ("Select", not answered, not asked) says something about
    the lead; as a level of its own LightGBM can split on it, where a missing category would
    only ever go with the other levels. Serving maps a missing value to it (`encode_matrix`).
    """
    levels = category_levels(rows, spec)
    for name in levels:
        if pd.isna(rows.categorical[name]).any():
            levels[name] = sorted([*levels[name], MISSING_LEVEL])
    return levels


@dataclass
class FittedBooster:
    """A LightGBM model with its calibration and what was learned at fit time."""

    booster: lgb.Booster
    levels: dict[str, list[str]]
    calibration: Calibration
    best_iteration: int
    valid_probability: np.ndarray
    calibration_losses: dict[str, float]


def fit_static_booster(
    rows: FeatureRows,
    y: np.ndarray,
    spec: FeatureSpec,
    config: TrainingConfig,
    *,
    order: np.ndarray | None = None,
    params: dict[str, Any] | None = None,
) -> FittedBooster:
    """Trees chosen by early stopping on an inner validation part, then refit on every row.

    The number of trees is chosen on the inner validation part (the last `valid_fraction` by
    order, else a stratified random part); the booster is then refit on every row with that many
    trees, so it learns from the newest leads too (in an ordered export the inner validation
    part is the most recent one, the closest to what is scored next). A refit has no held-out
    rows of its own, so its calibration is cross-fitted (`training.crossfit`): each block of the
    latest rows is scored by the same recipe (these settings, that many trees) fit on every
    other row, and the map is fit on those scores, as for the served refit of timed training.
    With too few rows to cross-fit, the early-stopped booster is kept, calibrated on its own
    scores of the inner validation part.

    Args:
        rows: Features of the training leads.
        y: Their outcomes.
        spec: Feature specification.
        config: LightGBM settings, `valid_fraction` and `seed`.
        order: Acquisition order of the rows: the inner validation and the latest blocks are
            then the last rows by order; else a stratified random part and the last rows by
            position.
        params: LightGBM parameters instead of the config's (used by tuning).

    Returns:
        The booster with the levels it was fit on, its calibration, and its calibrated
        held-out probabilities (`valid_probability`: for the score scale, tiers and MQL threshold).
    """
    positions = np.arange(len(y))
    if order is not None:
        ranked = positions[np.argsort(order, kind="stable")]
        n_valid = max(1, int(round(len(y) * config.valid_fraction)))
        fit_part, valid_part = ranked[:-n_valid], ranked[-n_valid:]
    else:
        fit_part, valid_part = train_test_split(
            positions, test_size=config.valid_fraction, stratify=y, random_state=config.seed
        )
    names = spec.feature_names()
    categorical = [names.index(c) for c in spec.categorical_features()]
    lgb_params = {**lightgbm_params(config, spec.feature_names()), **(params or {})}
    if lgb_params["num_threads"] == 0 and len(y) < ONE_THREAD_BELOW_ROWS:
        lgb_params["num_threads"] = 1
    settings = config.lightgbm

    levels = static_category_levels(_take(rows, fit_part), spec)
    fit_matrix = encode_matrix(_take(rows, fit_part), names, levels)
    valid_matrix = encode_matrix(_take(rows, valid_part), names, levels)
    train_set = lgb.Dataset(fit_matrix, y[fit_part], feature_name=names, categorical_feature=categorical, free_raw_data=False)
    stopped = lgb.train(
        lgb_params,
        train_set,
        num_boost_round=settings.max_rounds,
        valid_sets=[lgb.Dataset(valid_matrix, y[valid_part], reference=train_set)],
        callbacks=[lgb.early_stopping(settings.early_stopping_rounds, verbose=False)],
    )
    best = stopped.best_iteration or stopped.current_iteration()
    clock = positions.astype(np.float64) if order is None else np.asarray(order, dtype=np.float64)
    try:
        blocks = latest_blocks(clock)
    except ValueError:
        early = lgb.Booster(model_str=stopped.model_to_string(num_iteration=best))
        valid_raw = np.asarray(early.predict(valid_matrix, raw_score=True))
        with threadpool_limits(limits=1, user_api="blas"):
            calibration, losses = fit_calibration(valid_raw, y[valid_part], config.seed)
        return FittedBooster(early, levels, calibration, best, calibration.apply(valid_raw), losses)

    # A refit learns other trees on more rows per leaf: its raw scores sit on another scale than
    # the early-stopped booster's, so its map is fit on scores of the refit recipe itself.
    levels = static_category_levels(rows, spec)
    matrix = encode_matrix(rows, names, levels)

    def refit(mask: np.ndarray) -> lgb.Booster:
        data = lgb.Dataset(matrix[mask], y[mask], feature_name=names, categorical_feature=categorical)
        return lgb.train(lgb_params, data, num_boost_round=best)

    def fit_on(mask: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        booster = refit(mask)
        return lambda where: np.asarray(booster.predict(matrix[where], raw_score=True))

    held, held_raw = cross_fitted_raw(fit_on, blocks)
    with threadpool_limits(limits=1, user_api="blas"):
        calibration, losses = fit_calibration(held_raw, y[held], config.seed)
    served = refit(np.ones(len(y), dtype=bool))
    return FittedBooster(served, levels, calibration, best, calibration.apply(held_raw), losses)


@dataclass
class StaticTrainingResult:
    """What static training produced.

    Attributes:
        model: The bundle-ready model.
        metrics: Scorer -> metric -> value and 95 % interval, on the evaluation rows (test part
            or out-of-fold).
        plan: The evaluation plan.
        y: Outcome of the evaluation rows.
        scores: Scorer -> probability on the evaluation rows (the grid's after Platt scaling).
        fold_auc: Scorer -> ROC AUC per fold (one value for an ordered split).
        timings: Seconds per step.
    """

    model: ScoringModel
    metrics: dict[str, dict[str, dict[str, float]]]
    plan: EvaluationPlan
    y: np.ndarray
    scores: dict[str, np.ndarray]
    fold_auc: dict[str, list[float]]
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        """Evaluation facts for reports, MLflow and the bundle."""
        return evaluation_summary(self.plan, self.y, self.fold_auc)


def evaluation_summary(plan: EvaluationPlan, y: np.ndarray, fold_auc: dict[str, list[float]]) -> dict[str, object]:
    """How a static model was evaluated and its ROC AUC per fold."""
    return {
        "kind": plan.kind,
        "description": plan.description,
        "n_rows": int(len(y)),
        "n_conversions": int(y.sum()),
        "fold_roc_auc": {k: [round(v, 4) for v in vs] for k, vs in fold_auc.items()},
        "mean_fold_roc_auc": {k: round(float(np.mean(vs)), 4) for k, vs in fold_auc.items()},
    }


def static_fingerprint(data: StaticDataset) -> dict[str, object]:
    """Row counts and a content hash of a validated static export."""
    leads_bytes = pd.util.hash_pandas_object(data.leads.astype(str), index=False).to_numpy().tobytes()
    return {
        "n_leads": int(len(data.leads)),
        "n_conversions": int(data.leads["converted"].sum()),
        "quarantined_rows": data.report.quarantined_rows,
        "content_hash": content_hash(leads_bytes),
    }


def run_static_training(
    data: StaticDataset,
    spec: FeatureSpec,
    config: TrainingConfig,
    grid: PointGrid,
    plan: EvaluationPlan,
    progress: Progress | None = None,
    training_notes: dict[str, Any] | None = None,
    fit_model: Callable[..., Any] | None = None,
) -> StaticTrainingResult:
    """Score the model, the grid and a logistic regression on the plan's rows; build the bundle.

    Args:
        data: The validated static export.
        spec: A static feature spec (`interactions=False`).
        config: Training settings.
        grid: The handwritten point grid.
        plan: From `evaluation_plan`.
        progress: Called with a short message at each step.
        training_notes: More facts to keep in the bundle's `training` metadata (the leakage
            guard's decisions).
        fit_model: Fits the model of each fold, `fit_static_booster`'s signature and result
            attributes (`training.selection` passes the candidate chosen on time).

    Returns:
        The result, with a bundle-ready model.
    """
    if spec.behaviour_features():
        raise ValueError("run_static_training: the feature spec must be static (interactions: false)")
    say = progress or (lambda _msg: None)
    fit = fit_model or fit_static_booster
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    leads = data.leads
    y = leads["converted"].to_numpy().astype(np.int8)
    order = leads["order"].to_numpy() if data.has_order else None
    rows = lead_attribute_rows(leads, spec)
    grid_points = grid.score_frame(rows.to_frame(spec))

    evaluated = np.concatenate([test for _, test in plan.splits])
    scores = {name: np.full(len(y), np.nan) for name in STATIC_SCORERS}
    raw_model = np.full(len(y), np.nan)
    fold_auc: dict[str, list[float]] = {name: [] for name in STATIC_SCORERS}
    fits = []
    for k, (train, test) in enumerate(plan.splits, start=1):
        fitted = fit(_take(rows, train), y[train], spec, config, order=None if order is None else order[train])
        fits.append(fitted)
        test_matrix = encode_matrix(_take(rows, test), spec.feature_names(), fitted.levels)
        raw_model[test] = fitted.booster.predict(test_matrix, raw_score=True)
        scores["model"][test] = fitted.calibration.apply(raw_model[test])
        with threadpool_limits(limits=1, user_api="blas"):
            logistic = logistic_baseline(spec, config.seed).fit(_logistic_frame(_take(rows, train), spec), y[train])
        scores["logistic_regression"][test] = logistic.predict_proba(_logistic_frame(_take(rows, test), spec))[:, 1]
        scores["point_grid"][test] = _fit_one("platt", grid_points[train], y[train]).apply(grid_points[test])
        for name in STATIC_SCORERS:
            fold_auc[name].append(float(roc_auc_score(y[test], scores[name][test])))
        say(f"{'fold ' + str(k) if len(plan.splits) > 1 else 'test part'}: model AUC {fold_auc['model'][-1]:.3f}")
    timings["evaluation"] = round(time.perf_counter() - clock, 3)

    y_eval = y[evaluated]
    metrics = {
        name: scorer_metrics(y_eval, scores[name][evaluated], n_bootstrap=config.n_bootstrap, seed=config.seed)
        for name in STATIC_SCORERS
    }

    clock = time.perf_counter()
    # The served model keeps its own calibration (see fit_static_booster); tiers, score
    # quantiles and the MQL threshold come from its recipe's probabilities of held-out rows.
    final = fits[0] if plan.kind == "ordered_split" else fit(rows, y, spec, config)
    reference_p = final.valid_probability
    calibration_losses = final.calibration_losses
    timings["final_model"] = round(time.perf_counter() - clock, 3)
    what = f"LightGBM: {final.best_iteration} trees" if isinstance(final.booster, lgb.Booster) else f"{model_family_of(final.booster)} model"
    say(f"{what}; {plan.description}")

    grid_mql_share = float(np.mean(grid.is_mql(grid_points)))
    mql_probability = float(np.quantile(reference_p, 1 - grid_mql_share)) if grid_mql_share > 0 else 1.0
    trained_at = datetime.now(UTC).isoformat(timespec="seconds")
    model_text = final.booster.model_to_string()
    eval_scores = {name: s[evaluated] for name, s in scores.items()}
    meta = BundleMeta(
        model_version=f"{trained_at[:10].replace('-', '')}-{content_hash(model_text.encode())[:8]}",
        model_family=model_family_of(final.booster),
        trained_at=trained_at,
        horizon_days=0.0,  # a static export has no label window: the outcome is as exported
        feature_spec=spec,
        lead_schema=lead_schema_for(spec, data.schema),
        feature_names=spec.feature_names(),
        categorical_levels=final.levels,
        calibration=final.calibration,
        score_quantiles=np.quantile(reference_p, np.linspace(0, 1, 101)).tolist(),
        tiers=Tiers(
            hot=float(np.quantile(reference_p, 1 - config.hot_share)),
            warm=float(np.quantile(reference_p, 1 - config.hot_share - config.warm_share)),
        ),
        mql_probability=mql_probability,
        grid=grid,
        metrics={name: {m: v["value"] for m, v in ms.items()} for name, ms in metrics.items()},
        training={
            "data": static_fingerprint(data),
            "static": True,
            "evaluation": evaluation_summary(plan, y_eval, fold_auc),
            "best_iteration": int(final.best_iteration),
            "calibration_log_loss": calibration_losses,
            "grid_mql_share": grid_mql_share,
            **(training_notes or {}),
        },
    )
    model = ScoringModel(lgb.Booster(model_str=model_text) if isinstance(final.booster, lgb.Booster) else final.booster, meta)
    return StaticTrainingResult(model, metrics, plan, y_eval, eval_scores, fold_auc, timings)


def require_features(spec: FeatureSpec) -> None:
    """Refuse to train on nothing: every attribute column may have been excluded."""
    if not spec.feature_names():
        raise NotEnoughDataError(
            "no feature left to train on: every attribute column was excluded; declare more columns "
            "in data.columns or keep one with --allow-column"
        )
