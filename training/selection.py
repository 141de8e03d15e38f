"""Choose the model family and its settings on time, never on the test period.

Rolling-origin validation over the rows before the test period: the last `n_folds` blocks of
the training rows (each `block_fraction` of them) are validation periods in turn, each scored
by every candidate fit on all the rows before it (an expanding window, as the served model
will be: trained on the past, scoring what comes next). The candidate with the best mean ROC
AUC over the folds is chosen; the test period then measures it once, beside the grid and the
logistic regression (`training.static`). After that measurement the chosen candidate is refit
on every row, its settings carried over: the test period measured the method, and the served
model learns from the newest leads too.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from features.contract import StaticDataset
from features.engine import FeatureRows, lead_attribute_rows
from features.grid import PointGrid
from features.spec import FeatureSpec
from model.bundle import ScoringModel, Tiers, content_hash, encode_matrix, model_family_of
from training.candidates import (
    Candidate,
    FittedCandidate,
    cross_fitted_calibration,
    fit_candidate,
    fit_served_recipe,
    refit_candidate,
)
from training.config import TrainingConfig
from training.pipeline import Progress, _take
from training.selection_config import SelectionConfig
from training.static import EvaluationPlan, StaticTrainingResult, run_static_training

MIN_FOLD_ROWS = 100
MIN_FOLD_CONVERSIONS = 10


@dataclass
class Selection:
    """The chosen candidate and how every candidate did on each validation period.

    Attributes:
        chosen: The candidate with the best mean ROC AUC over the folds.
        folds: Per fold, `fit_rows`, `first_row`, `last_row` (positions in order).
        table: Per candidate, `candidate`, `family`, `half_life`, `fold_roc_auc`, `mean_roc_auc`.
        seconds: Time the selection took.
    """

    chosen: Candidate
    folds: list[dict[str, int]]
    table: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""
    rule: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen.name,
            "chosen_settings": self.chosen.model_dump(),
            "how": "rolling-origin validation over the rows before the test period (expanding window)",
            "folds": self.folds,
            "candidates": self.table,
            "rule": "best mean ROC AUC over the folds; the first candidate stays unless the best's paired gain over "
                    "it exceeds one standard error",
            **({"note": self.note} if self.note else {}),
            **({"kept_first": self.rule} if self.rule else {}),
        }

    def lines(self) -> list[str]:
        """The table in words, best first."""
        if self.note:
            return [f"{self.chosen.name}, {self.note}"]
        ranked = sorted(self.table, key=lambda r: -r["mean_roc_auc"])
        return ([self.rule] if self.rule else []) + [
            f"{'*' if r['candidate'] == self.chosen.name else ' '} {r['candidate']}: mean ROC AUC {r['mean_roc_auc']:.3f} "
            f"(folds {', '.join(f'{a:.3f}' for a in r['fold_roc_auc'])})"
            for r in ranked
        ]


def rolling_origin_folds(n: int, n_folds: int, block_fraction: float, min_rows: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fit positions, validation positions) of the last `n_folds` blocks of `n` rows in order.

    Fold k validates on block k (each `block_fraction` of the rows, at least `min_rows`) with
    every earlier row to fit on; the last block ends at the last row. A fold with fewer than
    twice `min_rows` rows to fit on is left out.
    """
    block = max(int(n * block_fraction), min_rows)
    folds = []
    for k in range(n_folds, 0, -1):
        end = n - block * (k - 1)
        start = end - block
        if start <= max(0, 2 * min_rows - 1) or block <= 0:
            continue
        folds.append((np.arange(start), np.arange(start, end)))
    return folds


def one_standard_error_choice(table: Sequence[dict[str, Any]], names: Sequence[str]) -> tuple[int, str]:
    """The candidate with the best mean fold ROC AUC, unless it is not clearly ahead of the first.

    The one-standard-error rule, paired by fold: the best replaces the first (today's LightGBM)
    only when its mean gain over the folds exceeds the standard error of its per-fold gains.
    Fold means a few thousandths apart are noise on folds of a few thousand rows.

    Args:
        table: Per candidate, `fold_roc_auc` (the same folds for all) and `mean_roc_auc`.
        names: Candidate names, for the note.

    Returns:
        The chosen position and, when the first was kept although another was ahead, why.
    """
    best = max(range(len(table)), key=lambda i: (table[i]["mean_roc_auc"], -i))
    gains = np.asarray(table[best]["fold_roc_auc"]) - np.asarray(table[0]["fold_roc_auc"])
    margin = float(gains.std(ddof=1) / np.sqrt(len(gains))) if len(gains) > 1 else 0.0
    if best == 0 or gains.mean() > margin:
        return best, ""
    return 0, (f"kept {names[0]}: {names[best]} was ahead by {gains.mean():.4f} on the folds' mean, within one "
               f"standard error of the paired fold gains ({margin:.4f})")  # fmt: skip


def select_candidate(
    rows: FeatureRows,
    y: np.ndarray,
    order: np.ndarray,
    spec: FeatureSpec,
    config: TrainingConfig,
    selection: SelectionConfig,
    progress: Progress | None = None,
    *,
    matured_at: np.ndarray | None = None,
) -> Selection:
    """Score every candidate on rolling-origin folds of these (training) rows; choose the best.

    Args:
        rows: Features of the rows before the test period.
        y: Their outcomes.
        order: Their acquisition order.
        spec: Feature specification.
        config: Training settings (each fit stops early and calibrates as `fit_candidate` does).
        selection: Candidates and folds.
        progress: Called with a line per candidate.
        matured_at: Per row, when its label closed, on the scale of `order` (snapshots: as_of
            plus the horizon). A fold fits only on rows whose label closed before its validation
            period starts. None: a row's label is known when it comes (one row per lead).

    Raises:
        NotEnoughDataError: No fold has enough rows and conversions to validate on.
    """
    say = progress or (lambda _msg: None)
    clock = time.perf_counter()
    ranked = np.argsort(order, kind="stable")
    folds = []
    for fit, valid in rolling_origin_folds(len(y), selection.n_folds, selection.block_fraction, MIN_FOLD_ROWS):
        fit_rows, valid_rows = ranked[fit], ranked[valid]
        if matured_at is not None:
            fit_rows = fit_rows[matured_at[fit_rows] <= order[valid_rows].min()]
        if len(fit_rows) >= 2 * MIN_FOLD_ROWS and MIN_FOLD_CONVERSIONS <= y[valid_rows].sum() < len(valid_rows):
            folds.append((fit_rows, valid_rows))
    candidates = selection.candidates()
    if not folds or len(candidates) == 1:
        why = "one candidate" if folds else (
            f"no rolling-origin fold of {len(y)} training rows has {MIN_FOLD_ROWS} leads with {MIN_FOLD_CONVERSIONS} "
            "conversions to validate on (export more leads, or lower training.selection.block_fraction)"
        )
        say(f"{candidates[0].name}, not chosen on time: {why}")
        return Selection(candidates[0], [], [], note=f"not chosen on time: {why}")
    table = []
    for candidate in candidates:
        aucs = []
        for fit, valid in folds:
            fitted = fit_candidate(candidate, _take(rows, fit), y[fit], spec, config, order=order[fit])
            raw = fitted.booster.predict(encode_matrix(_take(rows, valid), spec.feature_names(), fitted.levels), raw_score=True)
            aucs.append(float(roc_auc_score(y[valid], raw)))
        table.append({
            "candidate": candidate.name, "family": candidate.family, "half_life": candidate.half_life,
            "fold_roc_auc": [round(a, 4) for a in aucs], "mean_roc_auc": round(float(np.mean(aucs)), 4),
        })  # fmt: skip
        say(f"{candidate.name}: mean ROC AUC {np.mean(aucs):.3f} over {len(folds)} rolling-origin folds")
    best, note = one_standard_error_choice(table, [c.name for c in candidates])
    if note:
        say(note)
    fold_facts = [{"fit_rows": int(len(f)), "first_row": int(v.min()), "last_row": int(v.max())} for f, v in folds]
    return Selection(candidates[best], fold_facts, table, round(time.perf_counter() - clock, 3), rule=note)


def served_refit(
    measured: ScoringModel,
    fitted: FittedCandidate,
    rows: FeatureRows,
    y: np.ndarray,
    order: np.ndarray | None,
    spec: FeatureSpec,
    config: TrainingConfig,
    notes: dict[str, Any],
) -> ScoringModel:
    """The served model: the measured candidate refit on every row with matured labels.

    Its calibration is cross-fitted on the latest rows with the served recipe
    (`training.candidates.cross_fitted_calibration`); tiers, the 0-100 scale and the MQL
    threshold come from those calibrated out-of-block scores.

    Args:
        measured: The bundle of the model the test period measured.
        fitted: That model's fit (family, settings, trees).
        rows: Features of every row (train and test).
        y: Their outcomes.
        order: Their acquisition order.
        spec: Feature specification.
        config: Training settings.
        notes: More facts for the bundle's `training` metadata (the dates, the selection).
    """
    # Calibrated as itself: the served recipe cross-fitted on the latest rows, not the measured
    # model's test scores (other trees, another score scale).
    calibration, losses, p = cross_fitted_calibration(fitted, rows, y, spec, config, order)
    refit = refit_candidate(fitted, rows, y, spec, config, calibration, order=order)
    meta = measured.meta
    grid_share = float(meta.training.get("grid_mql_share", 0.0))
    text = refit.booster.model_to_string()
    update = {
        "model_family": model_family_of(refit.booster),
        "model_version": f"{meta.trained_at[:10].replace('-', '')}-{content_hash(text.encode())[:8]}",
        "categorical_levels": refit.levels,
        "calibration": calibration,
        "score_quantiles": np.quantile(p, np.linspace(0, 1, 101)).tolist(),
        "tiers": Tiers(hot=float(np.quantile(p, 1 - config.hot_share)),
                       warm=float(np.quantile(p, 1 - config.hot_share - config.warm_share))),
        "mql_probability": float(np.quantile(p, 1 - grid_share)) if grid_share > 0 else 1.0,
        "training": {**meta.training, "best_iteration": int(refit.best_iteration), "calibration_log_loss": losses,
                     "measured_model_version": meta.model_version, **notes},
    }  # fmt: skip
    return ScoringModel(refit.booster, meta.model_copy(update=update))


def run_chosen_static_training(
    data: StaticDataset,
    spec: FeatureSpec,
    config: TrainingConfig,
    grid: PointGrid,
    plan: EvaluationPlan,
    selection: SelectionConfig,
    progress: Progress | None = None,
    training_notes: dict[str, Any] | None = None,
    order_name: str = "order",
) -> tuple[StaticTrainingResult, Selection | None]:
    """Static training with the model chosen on time, measured once on the test part, then refit on every row.

    With an ordered split: candidates are chosen by `select_candidate` on the rows before the
    test part; the chosen one is measured on the test part beside the grid and the logistic
    regression (`run_static_training`); the served model is that candidate refit on every row
    (`served_refit`), and its bundle says which rows measured the method and up to which row
    the served model learned. Without an order there is no time to choose on: today's
    LightGBM, cross-validated as before, and no selection.

    Returns:
        The result (its metrics are the measured model's; its model is the served one) and the
        selection (None without an order).
    """
    notes = dict(training_notes or {})
    if plan.kind != "ordered_split":
        return run_static_training(data, spec, config, grid, plan, progress, notes), None
    leads = data.leads
    y = leads["converted"].to_numpy().astype(np.int8)
    order = leads["order"].to_numpy(dtype=np.float64)
    rows = lead_attribute_rows(leads, spec)
    train, test = plan.splits[0]
    chosen = select_candidate(_take(rows, train), y[train], order[train], spec, config, selection, progress)
    fits: list[FittedCandidate] = []

    def fit_chosen(rows_: FeatureRows, y_: np.ndarray, spec_: FeatureSpec, config_: TrainingConfig, *, order: np.ndarray | None = None) -> FittedCandidate:
        fits.append(fit_served_recipe(chosen.chosen, rows_, y_, spec_, config_, order=order))
        return fits[-1]

    measured = run_static_training(data, spec, config, grid, plan, progress, {**notes, "selection": chosen.to_dict()}, fit_model=fit_chosen)
    fitted = fits[0]
    windows = {
        "measured_on": {"order_from": float(order[test].min()), "order_to": float(order[test].max()), "n_leads": int(len(test)),
                        "order_name": order_name},
        "served": {"trained_through_order": float(order.max()), "n_leads": int(len(y)),
                   "refit": "every row with an outcome, the chosen settings carried over"},
    }  # fmt: skip
    served = served_refit(measured.model, fitted, rows, y, order, spec, config, windows)
    return dataclasses.replace(measured, model=served), chosen


def dates_sentence(training: dict[str, Any], order_name: str = "order") -> str | None:
    """ "measured on leads ... by a model that never saw them; served model trained on leads up to ..." """
    measured, served = training.get("measured_on"), training.get("served")
    if not measured or not served:
        return None
    if "created_from" in measured:
        return (
            f"measured on leads created {measured['created_from'][:10]} to {measured['created_to'][:10]} by a model that never "
            f"saw them; served model trained on leads up to {served['trained_through'][:10]}"
        )
    order_name = measured.get("order_name", order_name)
    return (
        f"measured on leads {order_name} {measured['order_from']:g} to {measured['order_to']:g} by a model that never saw "
        f"them; served model trained on every lead up to {order_name} {served['trained_through_order']:g}"
    )


def static_backtest(
    data: StaticDataset,
    spec: FeatureSpec,
    config: TrainingConfig,
    grid: PointGrid,
    selection: SelectionConfig,
    starts: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.9),
    period: float = 0.1,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Replay an ordered export: at each start, choose and fit on every row before it, score the next period.

    At start s (a share of the rows in order), the rows before s are all the method may learn
    from: candidates are chosen on their rolling-origin folds, the chosen one is measured on the
    rows in [s, s + period) beside the grid and a logistic regression fit on the same rows, all
    on the same period's rows.

    Returns:
        One row per period: `first_row`, `last_row`, `n_leads`, `conversion_rate`, `chosen`,
        `model_auc`, `point_grid_auc`, `logistic_regression_auc`.
    """
    say = progress or (lambda _msg: None)
    order = data.leads["order"].to_numpy(dtype=np.float64)
    ranked = np.argsort(order, kind="stable")
    n = len(ranked)
    quiet = config.model_copy(update={"n_bootstrap": 0})
    table = []
    for start in starts:
        first, end = int(n * start), min(n, int(n * (start + period)))
        if end <= first:
            continue
        keep = np.sort(ranked[:end])
        subset = dataclasses.replace(data, leads=data.leads.iloc[keep].reset_index(drop=True))
        sub_order = subset.leads["order"].to_numpy(dtype=np.float64)
        sub_ranked = np.argsort(sub_order, kind="stable")
        train, test = np.sort(sub_ranked[:first]), np.sort(sub_ranked[first:])
        plan = EvaluationPlan("ordered_split", [(train, test)], f"rows {first + 1}..{end}")
        result, chosen = run_chosen_static_training(subset, spec, quiet, grid, plan, selection)
        y = result.y
        row = {
            "first_row": first + 1, "last_row": end, "n_leads": int(len(y)), "conversion_rate": round(float(y.mean()), 4),
            "chosen": chosen.chosen.name if chosen else "lightgbm",
            **{f"{name}_auc": round(aucs[0], 4) for name, aucs in result.fold_auc.items()},
        }  # fmt: skip
        table.append(row)
        say(
            f"rows {row['first_row']}..{row['last_row']}: {row['chosen']} {row['model_auc']:.3f}, grid "
            f"{row['point_grid_auc']:.3f}, logistic regression {row['logistic_regression_auc']:.3f}"
        )
    return pd.DataFrame(table)
