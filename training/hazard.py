"""When: a discrete-time hazard over the snapshots, fit, measured on the test period, and refit to serve.

Each snapshot (lead, as_of) is expanded into person-period rows, one per interval of days after
`as_of` (`interval_ends_for`: 7, 14, 30, 60 and the horizon), while the lead is unconverted at
the interval's start and only when the interval has closed by the cutoff of its period (a label
never seen before it closed). A row's label is "converted in this interval". Short intervals
close sooner than the horizon, so the hazard learns from more recent snapshots than the
horizon's label allows. LightGBM binary on the bundle's encoded features plus the interval's
start and length (`model.hazard`) gives the interval hazards h_k; P(within t) and the expected
days to convert follow (`model.hazard`).

Time is respected as in `training.pipeline`: early stopping watches the validation period's
rows (leads created in it, intervals closed before the test period), train rows close before
validation starts; the measured hazard is then refit with those trees on every row of the leads
before the test period whose interval closed before it, and measured on the test period's
leads. The served hazard is refit the same way on every row whose interval closed by the data
end, over the served model's encoding (its category levels), with the measured trees: the
choice `training.refit` makes for the served model.

The measurement (`evaluate_hazard`): per horizon t (7, 30, the horizon), ROC AUC of P(within t)
against "converted within t" on the test snapshots whose t-window closed by the data end, beside
the main model's horizon probability (its only ranking) and, on simulated data, the oracle's
P(within t), on the same rows; and the integrated Brier score over days 1..horizon on the test
snapshots whose whole horizon closed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.contract import Dataset
from features.engine import FeatureRows, snapshot_features
from features.snapshots import snapshot_times
from features.spec import FeatureSpec
from model.bundle import ScoringModel
from model.hazard import INTERVAL_FEATURES, HazardModel, HazardSettings, interval_matrix, within_days
from training.config import TrainingConfig
from training.metrics import scorer_metrics
from training.pipeline import FeatureBuilder, NotEnoughDataError, TrainingResult, check_enough, fit_lightgbm, lightgbm_params

# Interval ends (days after as_of) below the horizon; the horizon closes the last interval.
INNER_ENDS_DAYS: tuple[float, ...] = (7.0, 14.0, 30.0, 60.0)
REPORTED_DAYS: tuple[float, ...] = (7.0, 30.0)
DAY_NS = 86_400 * 10**9
Oracle = Callable[[pd.DataFrame, float], np.ndarray]


def interval_ends_for(horizon_days: float) -> list[float]:
    """Interval ends: those of `INNER_ENDS_DAYS` shorter than the horizon, then the horizon."""
    return [e for e in INNER_ENDS_DAYS if e < horizon_days] + [float(horizon_days)]


def horizons_for(horizon_days: float) -> list[float]:
    """Horizons answered: 7 and 30 days when shorter than the horizon, and the horizon."""
    return [d for d in REPORTED_DAYS if d < horizon_days] + [float(horizon_days)]


def person_period(
    as_of: pd.Series, converted_at: pd.Series, interval_ends_days: list[float], cutoff: pd.Timestamp
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The person-period rows of snapshots: one per interval the lead enters unconverted, closed by `cutoff`.

    Interval k is (as_of + s_k, as_of + e_k] (s_0 = 0). A row exists when the lead is not
    converted at as_of + s_k and as_of + e_k <= cutoff; its label is 1 when the lead converted
    in the interval.

    Args:
        as_of: Snapshot times (UTC), one per snapshot.
        converted_at: The snapshot's lead's conversion time (UTC; NaT when not converted).
        interval_ends_days: Ascending interval ends in days.
        cutoff: Latest time a label may be known at (the next period's start, or the data end).

    Returns:
        (snapshot index, interval index, 0/1 label), one entry per row, snapshot-major.
    """
    ends = np.asarray(interval_ends_days, dtype=np.float64)
    starts_ns = (np.concatenate([[0.0], ends[:-1]]) * DAY_NS).astype(np.int64)
    ends_ns = (ends * DAY_NS).astype(np.int64)
    t0 = pd.DatetimeIndex(as_of).as_unit("ns").asi8[:, None]
    conv = pd.DatetimeIndex(converted_at).as_unit("ns")
    conv_ns = np.where(conv.isna(), np.iinfo(np.int64).max, conv.asi8)[:, None]
    cut = pd.Timestamp(cutoff).as_unit("ns").value
    alive = conv_ns > t0 + starts_ns
    closed = t0 + ends_ns <= cut
    rows, intervals = np.nonzero(alive & closed)
    labels = (conv_ns[rows, 0] <= t0[rows, 0] + ends_ns[intervals]).astype(np.int8)
    return rows, intervals, labels


@dataclass
class HazardRows:
    """Every snapshot the hazard may use, with its features and its lead's creation and conversion."""

    snapshots: pd.DataFrame  # lead_id, as_of, offset_days, created_at, converted_at
    features: FeatureRows


def hazard_rows(
    data: Dataset, spec: FeatureSpec, config: TrainingConfig, build_features: FeatureBuilder = snapshot_features
) -> HazardRows:
    """Snapshots at the configured offsets whose first interval has closed by the data end, with features."""
    ends = interval_ends_for(config.horizon_days)
    snaps = snapshot_times(data.leads, config.snapshot_offsets_days, data.data_end - pd.Timedelta(days=ends[0]))
    by_lead = data.leads.set_index("lead_id")
    snaps["created_at"] = snaps["lead_id"].map(by_lead["created_at"])
    snaps["converted_at"] = snaps["lead_id"].map(by_lead["converted_at"])
    return HazardRows(snaps, build_features(data.leads, data.interactions, snaps[["lead_id", "as_of"]], spec))


def _dataset(matrix: np.ndarray, snaps: pd.DataFrame, mask: np.ndarray, ends: list[float], cutoff: pd.Timestamp,
             settings: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    idx = np.flatnonzero(mask)
    rows, intervals, labels = person_period(snaps["as_of"].iloc[idx], snaps["converted_at"].iloc[idx], ends, cutoff)
    return interval_matrix(matrix[idx], *settings, intervals=intervals, rows=rows), labels


def _refit(params: dict[str, Any], x: np.ndarray, y: np.ndarray, names: list[str], categorical: list[int], trees: int) -> lgb.Booster:
    dtrain = lgb.Dataset(x, y, feature_name=names, categorical_feature=categorical, free_raw_data=False)
    return lgb.train(params, dtrain, num_boost_round=trees)


@dataclass
class WhenFit:
    """The measured and the served hazard, and the measured one's test-period figures."""

    measured: HazardModel
    served: HazardModel | None
    metrics: dict[str, Any]


def fit_hazard(
    result: TrainingResult,
    data: Dataset,
    spec: FeatureSpec,
    config: TrainingConfig,
    rows: HazardRows,
    oracle: Oracle | None = None,
    served: ScoringModel | None = None,
) -> WhenFit:
    """Fit the hazard on the periods `run_training` split, measure it on the test period, refit it to serve.

    Args:
        result: The measured run (`run_training`): its split boundaries and model.
        data: The data it was trained on.
        spec: Feature specification.
        config: Training settings (horizon, offsets, LightGBM parameters, bootstrap).
        rows: `hazard_rows` of the data.
        oracle: For simulated data, `(snapshots[lead_id, as_of], days) -> P(convert within days)`.
        served: The served model (`training.refit`): the served hazard is fit over its encoding;
            None: no served hazard.

    Returns:
        The measured hazard (with its metrics in its settings), the served one, the figures.

    Raises:
        NotEnoughDataError: The train or validation period has too few person-period rows.
    """
    ends, horizons = interval_ends_for(config.horizon_days), horizons_for(config.horizon_days)
    valid_start, test_start = pd.Timestamp(result.split["valid_start"]), pd.Timestamp(result.split["test_start"])
    names = [*result.model.feature_names, *INTERVAL_FEATURES]
    categorical = [names.index(c) for c in spec.categorical_features()]
    params = lightgbm_params(config, names)
    snaps = rows.snapshots
    created = snaps["created_at"]
    bounds = HazardSettings(interval_ends_days=ends, horizons_days=horizons, feature_names=names, trees=1).starts_and_lengths()
    matrix = result.model.encode(rows.features)

    before_valid = (created < valid_start).to_numpy()
    before_test = (created < test_start).to_numpy()
    train = _dataset(matrix, snaps, before_valid, ends, valid_start, bounds)
    valid = _dataset(matrix, snaps, before_test & ~before_valid, ends, test_start, bounds)
    for name, (_x, y) in (("hazard train period", train), ("hazard validation period", valid)):
        check_enough(name, pd.DataFrame({"label": y}), 200, 10, unit="person-period rows")
    stopped = fit_lightgbm(params, train, valid, feature_names=names, categorical=categorical,
                           max_rounds=config.lightgbm.max_rounds, early_stopping_rounds=config.lightgbm.early_stopping_rounds)  # fmt: skip
    trees = max(stopped.current_iteration(), 1)
    pool_x, pool_y = _dataset(matrix, snaps, before_test, ends, test_start, bounds)
    measured_settings = HazardSettings(
        interval_ends_days=ends, horizons_days=horizons, feature_names=names, trees=trees,
        training={"fit_rows": int(len(pool_y)), "fit_conversions": int(pool_y.sum()), "label_cutoff": test_start.isoformat(),
                  "early_stopping": {"train_rows": int(len(train[1])), "validation_rows": int(len(valid[1]))}},
    )  # fmt: skip
    measured = HazardModel(_refit(params, pool_x, pool_y, names, categorical, trees), measured_settings)

    test = ~before_test
    metrics = evaluate_hazard(
        measured.interval_hazards(matrix[test]),
        ends,
        horizons,
        snaps.loc[test].reset_index(drop=True),
        data.data_end,
        model_probability=result.model.probability(matrix[test]),
        oracle=oracle,
        n_bootstrap=config.n_bootstrap,
        seed=config.seed,
    )
    measured = HazardModel(measured.booster, measured_settings.model_copy(update={"metrics": metrics}))

    served_hazard = None
    if served is not None:
        served_matrix = served.encode(rows.features)
        every = np.ones(len(snaps), dtype=bool)
        all_x, all_y = _dataset(served_matrix, snaps, every, ends, data.data_end, bounds)
        served_settings = measured.settings.model_copy(update={"training": {
            "fit_rows": int(len(all_y)), "fit_conversions": int(all_y.sum()), "label_cutoff": data.data_end.isoformat(),
            "refit": "every person-period row whose interval closed by the data end, over the served model's encoding, "
                     "with the trees early stopping chose for the measured hazard; metrics are the measured hazard's",
        }})  # fmt: skip
        served_hazard = HazardModel(_refit(params, all_x, all_y, names, categorical, trees), served_settings)
    return WhenFit(measured, served_hazard, metrics)


def evaluate_hazard(
    hazards: np.ndarray,
    interval_ends_days: list[float],
    horizons_days: list[float],
    snapshots: pd.DataFrame,
    data_end: pd.Timestamp,
    *,
    model_probability: np.ndarray,
    oracle: Oracle | None = None,
    n_bootstrap: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Time-dependent ROC AUC per horizon and the integrated Brier score, the same rows for every scorer.

    Args:
        hazards: (n, K) interval hazards of the test snapshots.
        interval_ends_days: The K interval ends.
        horizons_days: Horizons measured (interval ends).
        snapshots: The test snapshots: `lead_id`, `as_of`, `converted_at`.
        data_end: Outcomes are known up to here: a t-window counts only when as_of + t <= data_end.
        model_probability: The main model's horizon probability of each snapshot (its ranking at every t).
        oracle: `(snapshots, days) -> P(within days)` on simulated data.
        n_bootstrap, seed: The bootstrap by lead (`training.metrics.scorer_metrics`).

    Returns:
        ``{"horizons": {"7": {"n_snapshots", "n_conversions", "hazard"|"model"|"oracle":
        {"roc_auc": {value, ci_low, ci_high}, "brier": {...}}}}, "integrated_brier": {"days",
        "n_snapshots", "hazard"|"oracle": {value, ci_low, ci_high}}, "curve": {"days", "observed",
        "hazard"|"oracle": [mean P(within day)]}}`` (the curve on the integrated Brier's rows); the main model's
        `brier` is that of a horizon probability, comparable at the horizon only.
    """
    as_of = pd.DatetimeIndex(snapshots["as_of"])
    conv = pd.DatetimeIndex(snapshots["converted_at"])
    days_to = np.asarray((conv - as_of) / pd.Timedelta(days=1), dtype=np.float64)  # NaN: not converted
    room = np.asarray((pd.Timestamp(data_end) - as_of) / pd.Timedelta(days=1), dtype=np.float64)
    groups = snapshots["lead_id"].to_numpy()
    out: dict[str, Any] = {"horizons": {}}
    for t in horizons_days:
        rows = room >= t
        y = (days_to[rows] <= t).astype(np.int8)
        scores = {"hazard": within_days(hazards[rows], interval_ends_days, [t])[:, 0], "model": model_probability[rows]}
        if oracle is not None:
            scores["oracle"] = oracle(snapshots.loc[rows, ["lead_id", "as_of"]], t)
        entry: dict[str, Any] = {"n_snapshots": int(rows.sum()), "n_conversions": int(y.sum())}
        for name, p in scores.items():
            ms = scorer_metrics(y, p, n_bootstrap=n_bootstrap, seed=seed, groups=groups[rows])
            entry[name] = {"roc_auc": ms["roc_auc"], "brier": ms["brier"]}
        # The two scorers' intervals overlap even when one is better on nearly every resample: the difference, paired.
        entry["hazard_minus_model_roc_auc"] = paired_auc_difference(
            y, scores["hazard"], scores["model"], groups[rows], n_bootstrap=n_bootstrap, seed=seed
        )
        out["horizons"][f"{t:g}"] = entry
    horizon = interval_ends_days[-1]
    rows = room >= horizon
    days = np.arange(1, int(np.floor(horizon)) + 1, dtype=np.float64)
    y_days = days_to[rows, None] <= days[None, :]
    curves = {"hazard": within_days(hazards[rows], interval_ends_days, days)}
    if oracle is not None:
        frame = snapshots.loc[rows, ["lead_id", "as_of"]]
        curves["oracle"] = np.column_stack([oracle(frame, float(d)) for d in days])
    ibs: dict[str, Any] = {"days": f"1..{len(days)}", "n_snapshots": int(rows.sum())}
    for name, curve in curves.items():
        per_row = ((curve - y_days) ** 2).mean(axis=1)
        ibs[name] = grouped_mean_interval(per_row, groups[rows], n_bootstrap=n_bootstrap, seed=seed)
    out["integrated_brier"] = ibs
    # When they convert, on the same rows: the share converted by each day beside the mean P(within day).
    out["curve"] = {"days": days.tolist(), "observed": y_days.mean(axis=0).tolist(),
                    **{name: curve.mean(axis=0).tolist() for name, curve in curves.items()}}  # fmt: skip
    return out


def weighted_roc_auc(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of one scorer under each row of `weights` (resample counts), ties counted half.

    Args:
        y: 0/1 labels (n,).
        score: Scores (n,).
        weights: (B, n) non-negative row weights, one resample per row.

    Returns:
        (B,) AUCs; NaN where a resample lacks a class.
    """
    order = np.argsort(score, kind="stable")
    s, yy, w = score[order], y[order].astype(np.float64), weights[:, order]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(s) != 0) + 1])
    group = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(s))))
    neg, pos = w * (1.0 - yy), w * yy
    neg_in = np.add.reduceat(neg, starts, axis=1)
    below = (np.cumsum(neg_in, axis=1) - neg_in)[:, group] + 0.5 * neg_in[:, group]
    with np.errstate(invalid="ignore", divide="ignore"):
        auc: np.ndarray = (pos * below).sum(axis=1) / (pos.sum(axis=1) * neg.sum(axis=1))
    return auc


def paired_auc_difference(
    y: np.ndarray, score_a: np.ndarray, score_b: np.ndarray, groups: np.ndarray, *, n_bootstrap: int, seed: int
) -> dict[str, float]:
    """ROC AUC of `score_a` minus that of `score_b` on the same rows, with a 95 % interval from one bootstrap of leads for both."""
    codes, uniques = pd.factorize(groups)
    value = float(weighted_roc_auc(y, score_a, np.ones((1, len(y))))[0] - weighted_roc_auc(y, score_b, np.ones((1, len(y))))[0])
    if n_bootstrap == 0:
        return {"value": value, "ci_low": float("nan"), "ci_high": float("nan")}
    rng = np.random.default_rng(seed)
    block = max(1, 2_000_000 // max(len(y), 1))  # resamples at once: ~16 MB per (B, n) array
    diffs = []
    for first in range(0, n_bootstrap, block):
        b = min(block, n_bootstrap - first)
        drawn = rng.integers(0, len(uniques), size=(b, len(uniques)))
        counts = np.stack([np.bincount(row, minlength=len(uniques)) for row in drawn]).astype(np.float64)[:, codes]
        diffs.append(weighted_roc_auc(y, score_a, counts) - weighted_roc_auc(y, score_b, counts))
    d = np.concatenate(diffs)
    low, high = np.nanpercentile(d, [2.5, 97.5])
    return {"value": value, "ci_low": float(low), "ci_high": float(high)}


def grouped_mean_interval(values: np.ndarray, groups: np.ndarray, *, n_bootstrap: int, seed: int) -> dict[str, float]:
    """A mean over rows with a 95 % percentile interval from a bootstrap of whole groups (leads)."""
    codes, uniques = pd.factorize(groups)
    sums = np.bincount(codes, weights=values, minlength=len(uniques))
    sizes = np.bincount(codes, minlength=len(uniques)).astype(np.float64)
    value = float(values.mean())
    if n_bootstrap == 0:
        return {"value": value, "ci_low": float("nan"), "ci_high": float("nan")}
    rng = np.random.default_rng(seed)
    means = np.empty(n_bootstrap)
    for b in range(n_bootstrap):  # one resample of the groups per pass; a few thousand groups each
        counts = np.bincount(rng.integers(0, len(uniques), len(uniques)), minlength=len(uniques))
        means[b] = counts @ sums / (counts @ sizes)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"value": value, "ci_low": float(low), "ci_high": float(high)}


def hazard_lines(metrics: dict[str, Any], digits: int = 3) -> list[str]:
    """The figures as a markdown table: per horizon, ROC AUC of each scorer with its interval; then the integrated Brier."""

    def cell(stats: dict[str, float] | None, digits: int = digits) -> str:
        if stats is None:
            return "-"
        return f"{stats['value']:.{digits}f} [{stats['ci_low']:.{digits}f}, {stats['ci_high']:.{digits}f}]"

    lines = ["| horizon | snapshots | conversions | hazard AUC | main model AUC | hazard - main (paired) | oracle AUC |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for t, entry in metrics["horizons"].items():
        lines.append(f"| {t} days | {entry['n_snapshots']} | {entry['n_conversions']} | {cell(entry['hazard']['roc_auc'])} | "
                     f"{cell(entry['model']['roc_auc'])} | {cell(entry['hazard_minus_model_roc_auc'], digits=4)} | "
                     f"{cell(entry.get('oracle', {}).get('roc_auc'))} |")  # fmt: skip
    ibs = metrics["integrated_brier"]
    lines.append(f"integrated Brier, days {ibs['days']} on {ibs['n_snapshots']} snapshots: hazard {cell(ibs['hazard'])}"
                 + (f", oracle {cell(ibs['oracle'])}" if "oracle" in ibs else ""))  # fmt: skip
    return lines


def hazard_summary(metrics: dict[str, Any]) -> str:
    """One line: the hazard's ROC AUC per horizon beside the main model's, and its integrated Brier."""
    parts = [f"{t}d {e['hazard']['roc_auc']['value']:.3f} (main {e['model']['roc_auc']['value']:.3f})"
             for t, e in metrics["horizons"].items()]  # fmt: skip
    return f"hazard ROC AUC on the test period: {', '.join(parts)}; integrated Brier {metrics['integrated_brier']['hazard']['value']:.4f}"


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """MLflow metric names and values: `hazard.{scorer}.roc_auc_{t}d` (and `.ci_low`, `.ci_high`), `hazard.{scorer}.integrated_brier`."""
    flat: dict[str, float] = {}

    def put(name: str, stats: dict[str, float]) -> None:
        flat[name] = stats["value"]
        flat[f"{name}.ci_low"], flat[f"{name}.ci_high"] = stats["ci_low"], stats["ci_high"]

    for t, entry in metrics["horizons"].items():
        for scorer in ("hazard", "model", "oracle"):
            if scorer in entry:
                put(f"hazard.{scorer}.roc_auc_{t}d", entry[scorer]["roc_auc"])
                put(f"hazard.{scorer}.brier_{t}d", entry[scorer]["brier"])
        put(f"hazard.hazard_minus_model.roc_auc_{t}d", entry["hazard_minus_model_roc_auc"])
    for scorer in ("hazard", "oracle"):
        if scorer in metrics["integrated_brier"]:
            put(f"hazard.{scorer}.integrated_brier", metrics["integrated_brier"][scorer])
    return flat


def fit_when(
    result: TrainingResult,
    served: ScoringModel,
    data: Dataset,
    spec: FeatureSpec,
    config: TrainingConfig,
    oracle: Oracle | None = None,
    build_features: FeatureBuilder = snapshot_features,
) -> tuple[ScoringModel, WhenFit | None, str]:
    """The served model with its hazard, the fit, and a line of figures (what `leadscore train` calls).

    Data too thin for a hazard leaves the served model without one and says why.
    """
    try:
        fit = fit_hazard(result, data, spec, config, hazard_rows(data, spec, config, build_features), oracle, served)
    except NotEnoughDataError as error:
        return served, None, f"hazard not fit: {error}"
    assert fit.served is not None
    hazard = HazardModel(fit.served.booster, fit.served.settings.model_copy(update={"metrics": fit.metrics}))
    return served.with_hazard(hazard), fit, hazard_summary(fit.metrics)

