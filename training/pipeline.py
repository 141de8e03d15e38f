"""Training: snapshots -> time split -> LightGBM + calibration, scored beside the baselines.

`run_training` is pure (frames in, a result out): reading files, MLflow and printing happen in
the CLI and `training.tracking`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from features.contract import Dataset
from features.engine import FeatureRows, snapshot_features
from features.grid import PointGrid
from features.schema import lead_schema_for
from features.snapshots import conversion_labels, matured_label_cutoff, snapshot_times
from features.spec import FeatureSpec
from features.vocabulary import NEVER_SEEN_DAYS
from model.bundle import BundleMeta, Calibration, ScoringModel, Tiers, content_hash, encode_matrix, model_family_of
from model.monitoring import reference_distribution
from training.config import TrainingConfig, constrained_recencies
from training.metrics import scorer_metrics
from training.selection_config import Candidate, SelectionConfig

Progress = Callable[[str], None]
SCORERS = ("model", "point_grid", "logistic_regression", "oracle")


class NotEnoughDataError(ValueError):
    """Training would produce a meaningless model; the message says what is missing."""


@dataclass
class SplitFrames:
    """Snapshots of one period with their features, labels and every scorer's probability."""

    snapshots: pd.DataFrame  # lead_id, as_of, offset_days, label
    rows: FeatureRows
    matrix: np.ndarray
    scores: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def y(self) -> np.ndarray:
        return self.snapshots["label"].to_numpy()


@dataclass
class TrainingResult:
    model: ScoringModel
    metrics: dict[str, dict[str, dict[str, float]]]
    split: dict[str, object]
    train: SplitFrames
    valid: SplitFrames
    test: SplitFrames
    timings: dict[str, float]
    logistic: Pipeline
    # Every snapshot before the test period whose label closed before it: what the measured
    # model learned from (train, validation and the snapshots whose window crossed into it).
    fit: SplitFrames | None = None
    # The chosen family and settings, its trees, and how it was chosen (None: not chosen).
    candidate: Candidate | None = None
    rounds: int = 0
    selection: dict[str, Any] | None = None
    # Each test snapshot's trend label (`training.trend.snapshot_trends`); None without thresholds.
    test_trend: np.ndarray | None = None


def _content_bytes(frame: pd.DataFrame) -> bytes:
    # Timestamps are hashed as UTC nanoseconds, other columns as text: the same data gives the
    # same hash from CSV or Parquet, and formatting millions of timestamps as text (most of a
    # 1M-snapshot training run's time) is avoided.
    columns = {
        name: column.dt.as_unit("ns").array.asi8 if pd.api.types.is_datetime64_any_dtype(column.dtype) else column.astype(str)
        for name, column in frame.items()
    }
    return pd.util.hash_pandas_object(pd.DataFrame(columns), index=False).to_numpy().tobytes()


def data_fingerprint(data: Dataset) -> dict[str, object]:
    """Row counts, time range and a content hash of the validated data."""
    leads_bytes, events_bytes = _content_bytes(data.leads), _content_bytes(data.interactions)
    return {
        "n_leads": int(len(data.leads)),
        "n_interactions": int(len(data.interactions)),
        "n_conversions": int(data.leads["converted_at"].notna().sum()),
        "quarantined_rows": data.report.quarantined_rows,
        "first_created_at": data.leads["created_at"].min().isoformat(),
        "last_created_at": data.leads["created_at"].max().isoformat(),
        "data_end": data.data_end.isoformat(),
        "data_end_source": data.data_end_source,
        "content_hash": content_hash(leads_bytes, events_bytes),
    }


def time_split(
    snapshots: pd.DataFrame, leads: pd.DataFrame, config: TrainingConfig
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, object]]:
    """Split snapshots by their lead's creation time; each period's labels mature before the next.

    The test period holds the last `test_fraction` of the leads (by creation). Early stopping,
    calibration, tiers and the MQL threshold are fit on validation, so a validation label
    window must close before the test period starts, as a training one must before validation
    starts: otherwise what is fit has seen conversions of the period it is measured on. A lead
    created within `horizon_days` of a boundary has only windows crossing it; such snapshots
    are excluded (and counted), so the validation period starts early enough for
    `valid_fraction` of the leads to have a snapshot whose window closes in time.

    Args:
        snapshots: `lead_id`, `as_of`, `label` (all with matured labels).
        leads: `lead_id`, `created_at`.
        config: Fractions and horizon.

    Returns:
        train, valid, test snapshots and a description of the boundaries, with
        `excluded_snapshots`: per period, the snapshots left out because their label window
        crosses into the next period.

    Raises:
        NotEnoughDataError: Too few leads, or too few leads whose label can close before the
            test period to fill the validation period.
    """
    lead_index = pd.Index(leads["lead_id"])
    snap_created = pd.DatetimeIndex(leads["created_at"].iloc[lead_index.get_indexer(snapshots["lead_id"])])
    lead_times = leads["created_at"].iloc[lead_index.get_indexer(snapshots["lead_id"].unique())].sort_values()
    n = len(lead_times)
    if n < 10:
        raise NotEnoughDataError(f"only {n} leads have a matured label; need at least a few hundred")
    test_start = lead_times.iloc[int(n * (1 - config.test_fraction))]
    horizon = pd.Timedelta(days=config.horizon_days)
    label_end = pd.DatetimeIndex(snapshots["as_of"]) + horizon
    # Leads before the test period with at least one window closing before it, by creation.
    closes_before_test = np.asarray((label_end <= test_start) & (snap_created < test_start))
    usable_leads = snapshots.loc[closes_before_test, "lead_id"].unique()
    usable = leads["created_at"].iloc[lead_index.get_indexer(usable_leads)].sort_values()
    n_valid = int(n * config.valid_fraction)
    if len(usable) <= n_valid:
        raise NotEnoughDataError(
            f"the validation period needs {n_valid} leads whose {config.horizon_days:g}-day label window closes "
            f"before the test period starts ({test_start.date().isoformat()}); {len(usable)} have one. {TIME_SPLIT_ADVICE}"
        )
    valid_start = usable.iloc[len(usable) - n_valid]
    before_valid = snap_created < valid_start
    in_valid_period = ~before_valid & (snap_created < test_start)
    in_train = before_valid & (label_end <= valid_start)
    in_valid = in_valid_period & (label_end <= test_start)
    in_test = snap_created >= test_start
    boundaries = {
        "valid_start": valid_start.isoformat(),
        "test_start": test_start.isoformat(),
        "train_label_cutoff": valid_start.isoformat(),
        "valid_label_cutoff": test_start.isoformat(),
        "excluded_snapshots": {
            "train": int((before_valid & ~in_train).sum()),
            "validation": int((in_valid_period & ~in_valid).sum()),
        },
    }
    return (
        snapshots[np.asarray(in_train)].reset_index(drop=True),
        snapshots[np.asarray(in_valid)].reset_index(drop=True),
        snapshots[np.asarray(in_test)].reset_index(drop=True),
        boundaries,
    )


TIME_SPLIT_ADVICE = "Add more history, shorten horizon_days, or change valid/test fractions."
MIN_MATURED_LEADS = 200

def split_snapshots(
    data: Dataset, config: TrainingConfig
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, object]]:
    """Every matured snapshot with its label, split into train, validation and test periods.

    Raises:
        NotEnoughDataError: No label has matured, or a period is too small to learn from or
            to measure on.
    """
    data_end = data.data_end
    cutoff = matured_label_cutoff(data_end, config.horizon_days)
    snaps = snapshot_times(data.leads, config.snapshot_offsets_days, cutoff)
    if snaps.empty:
        raise NotEnoughDataError(
            f"no lead is older than horizon_days={config.horizon_days:g} at the data end "
            f"{data_end.isoformat()}: no label has matured yet"
        )
    n_matured = snaps["lead_id"].nunique()
    if n_matured < MIN_MATURED_LEADS:
        raise NotEnoughDataError(
            f"too few matured labels: {n_matured} leads were created at least horizon_days="
            f"{config.horizon_days:g} before the data end {data_end.date().isoformat()} (need at least "
            f"{MIN_MATURED_LEADS}); add older leads or shorten horizon_days"
        )
    snaps["label"] = conversion_labels(snaps, data.leads, config.horizon_days)
    train_s, valid_s, test_s, boundaries = time_split(snaps, data.leads, config)
    check_enough("train period", train_s, 200, 20)
    check_enough("validation period", valid_s, 100, 10)
    check_enough("test period", test_s, 100, 10)
    return snaps, train_s, valid_s, test_s, boundaries


# Horizons and snapshot offsets `settings_advice` tries, in days.
ADVICE_HORIZONS = (7.0, 14.0, 30.0, 60.0, 90.0, 180.0)
MIN_TREES = 20


def settings_advice(data: Dataset, config: TrainingConfig) -> str:
    """A horizon (and snapshot offsets) that would give this export the most training conversions.

    Tries each of `ADVICE_HORIZONS`, with the configured offsets and with one snapshot at
    creation, by splitting the snapshots as training would (no features, no fit).

    Returns:
        e.g. "horizon_days: 30 would give 1,240 training snapshots with 96 conversions", or ""
        when no other setting gives more.
    """
    current = config.snapshot_offsets_days
    options = []
    for horizon in ADVICE_HORIZONS:
        for offsets in ([current] if current == [0.0] else [current, [0.0]]):
            trial = config.model_copy(update={"horizon_days": horizon, "snapshot_offsets_days": offsets})
            try:
                _snaps, train_s, _valid, _test, _bounds = split_snapshots(data, trial)
            except NotEnoughDataError:
                continue
            options.append((int(train_s["label"].sum()), len(train_s), horizon, offsets))
    here = [o for o in options if o[2] == config.horizon_days and o[3] == current]
    better = [o for o in options if not here or o[0] > here[0][0]]
    if not better:
        return ""
    conversions, n, horizon, offsets = max(better, key=lambda o: (o[0], -o[2]))
    setting = f"horizon_days: {horizon:g}" + ("" if offsets == current else f" with snapshot_offsets_days: {offsets}")
    return f"{setting} would give {n:,} training snapshots with {conversions:,} conversions."



def _served_like_rows(
    snaps: pd.DataFrame, data: Dataset, spec: FeatureSpec, boundaries: dict[str, Any], build_features: FeatureBuilder
) -> FeatureRows:
    """Features of every snapshot of the training period's leads known before validation starts.

    The drift reference: a service scores leads at every offset, whatever their label, while the
    training rows leave out the snapshots whose label window runs into validation (the older
    snapshots of the period's last leads), which would make served leads look older than training.
    """
    valid_start = pd.Timestamp(boundaries["valid_start"])
    created = snaps["lead_id"].map(data.leads.set_index("lead_id")["created_at"])
    known = ((created < valid_start) & (snaps["as_of"] < valid_start)).to_numpy()
    return build_features(data.leads, data.interactions, snaps[known].reset_index(drop=True), spec)


def check_enough(
    name: str,
    snapshots: pd.DataFrame,
    min_rows: int,
    min_positives: int,
    *,
    unit: str = "snapshots",
    advice: str = TIME_SPLIT_ADVICE,
) -> None:
    """Refuse a period too small to learn from or to measure anything on.

    Args:
        name: What is checked, in words ("test period").
        snapshots: Its rows, with a 0/1 `label`.
        min_rows: Fewest rows accepted.
        min_positives: Fewest conversions accepted (and at least one non-conversion).
        unit: What a row is, in words ("snapshots", "leads").
        advice: What the user can do about it.

    Raises:
        NotEnoughDataError: Saying what is short, by how much, and what to do.
    """
    n, pos = len(snapshots), int(snapshots["label"].sum())
    short = []
    if n < min_rows:
        short.append(f"{n} {unit} (need at least {min_rows})")
    if pos < min_positives:
        short.append(f"{pos} conversions (need at least {min_positives})")
    if n and pos == n:
        short.append("no non-conversions (need some)")
    if short:
        raise NotEnoughDataError(f"{name} is too small: {'; '.join(short)}. {advice}")


def lightgbm_params(config: TrainingConfig, feature_names: list[str] | None = None) -> dict[str, Any]:
    """LightGBM's native parameters from the training config (rounds and early stopping aside).

    Args:
        config: Training settings.
        feature_names: The model's features, in order; needed for `monotone_increasing` and `monotone_decreasing`.

    Raises:
        ValueError: `monotone_increasing` or `monotone_decreasing` names a feature the model does
            not have, or both name one.
    """
    params = config.lightgbm
    monotone = {}
    if params.monotone_increasing or params.monotone_decreasing:
        for key in ("monotone_increasing", "monotone_decreasing"):
            unknown = [f for f in getattr(params, key) if f not in (feature_names or [])]
            if unknown:
                raise ValueError(f"training.lightgbm.{key}: {unknown} are not features of this model")
        both = sorted(set(params.monotone_increasing) & set(params.monotone_decreasing))
        if both:
            raise ValueError(f"training.lightgbm: {both} are in both monotone_increasing and monotone_decreasing")
        monotone = {"monotone_constraints": [
            int(f in params.monotone_increasing) - int(f in params.monotone_decreasing) for f in feature_names or []
        ]}  # fmt: skip
    return {
        "objective": "binary",
        "metric": "binary_logloss",
        "learning_rate": params.learning_rate,
        "num_leaves": params.num_leaves,
        "max_depth": params.max_depth,
        "min_child_samples": params.min_child_samples,
        "feature_fraction": params.feature_fraction,
        "bagging_fraction": params.bagging_fraction,
        "bagging_freq": params.bagging_freq,
        "lambda_l2": params.lambda_l2,
        "cat_smooth": params.cat_smooth,
        "min_data_per_group": params.min_data_per_group,
        "cat_l2": params.cat_l2,
        "num_threads": params.num_threads,
        "seed": config.seed,
        "deterministic": True,
        "verbosity": -1,
        **monotone,
    }


def fit_calibration(raw: np.ndarray, y: np.ndarray, seed: int) -> tuple[Calibration, dict[str, float]]:
    """Choose isotonic or Platt scaling by 2-fold cross-fitted log loss on validation, then fit on all."""
    rng = np.random.default_rng(seed)
    fold = rng.integers(0, 2, size=raw.size)
    losses: dict[str, float] = {}
    for method in ("platt", "isotonic"):
        p = np.empty(raw.size)
        for k in (0, 1):
            cal = _fit_one(method, raw[fold != k], y[fold != k])
            p[fold == k] = cal.apply(raw[fold == k])
        losses[method] = float(log_loss(y, np.clip(p, 1e-6, 1 - 1e-6), labels=[0, 1]))
    best = min(losses, key=losses.__getitem__)
    return _fit_one(best, raw, y), losses


# Share of a Platt map in an isotonic calibration: enough to keep the model's order (no ties in
# a flat step or past the last knot), too little to move a probability by more than 0.05.
ISOTONIC_PLATT_SHARE = 0.05


def _fit_one(method: str, raw: np.ndarray, y: np.ndarray) -> Calibration:
    lr = LogisticRegression(C=1e6).fit(raw.reshape(-1, 1), y)
    a, b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    if method == "isotonic":
        iso = IsotonicRegression(out_of_bounds="clip", y_min=1e-4, y_max=1 - 1e-4).fit(raw, y)
        # A Platt slope that is not positive would turn the order around: then isotonic alone.
        share = ISOTONIC_PLATT_SHARE if a > 0 else 0.0
        return Calibration(method="isotonic", x=iso.X_thresholds_.tolist(), y=iso.y_thresholds_.tolist(), a=a, b=b, blend=share)
    return Calibration(method="platt", a=a, b=b)


def category_levels(rows: FeatureRows, spec: FeatureSpec) -> dict[str, list[str]]:
    """Levels of each categorical feature seen in training, sorted (missing is not a level)."""
    return {
        name: sorted({v for v in rows.categorical[name] if v is not None})
        for name in spec.categorical_features()
    }


def logistic_baseline(spec: FeatureSpec, seed: int) -> Pipeline:
    """Logistic regression on the same features: one-hot categories, log1p + scaled numbers."""
    numeric = [n for n in spec.feature_names() if n not in spec.categorical_features()]
    signed_log = FunctionTransformer(lambda x: np.sign(x) * np.log1p(np.abs(x)), feature_names_out="one-to-one")
    transform = ColumnTransformer(
        [
            (
                "categories",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="(missing)"),
                    OneHotEncoder(handle_unknown="ignore", min_frequency=20),
                ),
                spec.categorical_features(),
            ),
            (
                "numbers",
                make_pipeline(SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True), signed_log, StandardScaler()),
                numeric,
            ),
        ]
    )
    return Pipeline([("features", transform), ("model", LogisticRegression(C=0.5, max_iter=2000, random_state=seed))])


def _logistic_frame(rows: FeatureRows, spec: FeatureSpec) -> pd.DataFrame:
    frame = rows.to_frame(spec)
    for name in spec.categorical_features():
        frame[name] = frame[name].astype(object).where(frame[name].notna(), np.nan)
    return frame


FeatureBuilder = Callable[[pd.DataFrame, pd.DataFrame, pd.DataFrame, FeatureSpec], FeatureRows]


class BoosterFitter(Protocol):
    """Fits LightGBM on (matrix, labels) with early stopping on a validation set."""

    def __call__(
        self,
        params: dict[str, Any],
        train: tuple[np.ndarray, np.ndarray],
        valid: tuple[np.ndarray, np.ndarray],
        *,
        feature_names: list[str],
        categorical: list[int],
        max_rounds: int,
        early_stopping_rounds: int,
    ) -> lgb.Booster: ...


def fit_lightgbm(
    params: dict[str, Any],
    train: tuple[np.ndarray, np.ndarray],
    valid: tuple[np.ndarray, np.ndarray],
    *,
    feature_names: list[str],
    categorical: list[int],
    max_rounds: int,
    early_stopping_rounds: int,
) -> lgb.Booster:
    """LightGBM on this machine, early stopping on validation log loss.

    Args:
        params: LightGBM parameters (native names).
        train: Model matrix and 0/1 labels to fit on.
        valid: Model matrix and labels that early stopping watches.
        feature_names: Column names of the matrices.
        categorical: Positions of the categorical columns (codes of the training levels).
        max_rounds: Most boosting rounds.
        early_stopping_rounds: Stop after this many rounds without a better validation loss.

    Returns:
        A booster holding only the trees up to the best iteration, so that the saved model
        predicts what was validated.
    """
    dtrain = lgb.Dataset(train[0], train[1], feature_name=feature_names, categorical_feature=categorical,
                         free_raw_data=False)
    dvalid = lgb.Dataset(valid[0], valid[1], reference=dtrain)
    booster = lgb.train(
        params,
        dtrain,
        num_boost_round=max_rounds,
        valid_sets=[dvalid],
        valid_names=["validation"],
        callbacks=[lgb.early_stopping(early_stopping_rounds, verbose=False)],
    )
    best = booster.best_iteration or booster.current_iteration()
    return lgb.Booster(model_str=booster.model_to_string(num_iteration=best))


def _take(rows: FeatureRows, index: np.ndarray) -> FeatureRows:
    return FeatureRows(
        categorical={k: v[index] for k, v in rows.categorical.items()},
        numeric={k: v[index] for k, v in rows.numeric.items()},
    )


def run_training(
    data: Dataset,
    spec: FeatureSpec,
    config: TrainingConfig,
    grid: PointGrid,
    truth_probability: Callable[[pd.DataFrame, float], np.ndarray] | None = None,
    progress: Progress | None = None,
    build_features: FeatureBuilder = snapshot_features,
    fit_booster: BoosterFitter = fit_lightgbm,
    selection: SelectionConfig | None = None,
) -> TrainingResult:
    """Train the model and score it beside the point grid and a logistic regression.

    Args:
        data: Validated leads and interactions.
        spec: Feature specification.
        config: Training settings.
        grid: The handwritten point grid.
        truth_probability: For simulated data, `(snapshots[lead_id, as_of], horizon) -> p`:
            the oracle scored on the same test rows.
        progress: Called with a short message at each step.
        build_features: Computes the snapshots' features; `snapshot_features` here, the same
            function per partition of leads on a Dask cluster (`training.distributed`).
        fit_booster: Fits LightGBM with early stopping; `fit_lightgbm` here, Dask's
            distributed LightGBM in `training.distributed`.
        selection: Candidates to choose among on rolling-origin folds of the snapshots before
            the test period (`training.selection`); None: LightGBM under its budget, not chosen.

    Returns:
        The bundle-ready model, per-scorer test metrics and the split frames.
    """
    say = progress or (lambda _msg: None)
    recencies = constrained_recencies(config.lightgbm.monotone_decreasing)
    if recencies and spec.never_seen_days is None:
        # LightGBM does not order a missing value against numbers: the first event of a type
        # would turn the missing recency into a number on either side of a split.
        raise ValueError(
            f"training.lightgbm.monotone_decreasing: {recencies} are missing for a type never shown, which a monotone "
            f"constraint cannot order; set features.never_seen_days (e.g. {NEVER_SEEN_DAYS:g}, what leadscore.yaml sets)"
        )
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 3)
        clock = now

    data_end = data.data_end
    try:
        snaps, train_s, valid_s, test_s, boundaries = split_snapshots(data, config)
    except NotEnoughDataError as error:
        raise NotEnoughDataError(f"{error} {settings_advice(data, config)}".strip()) from error

    # The measured model learns from every snapshot before the test period whose label closed
    # before it starts: train, validation, and the train snapshots whose window crossed into
    # validation. Validation only chooses (the family, the trees); the test period then measures
    # the method as it serves, fit on everything it may know.
    test_start = pd.Timestamp(boundaries["test_start"])
    created_at = data.leads.set_index("lead_id")["created_at"]
    snap_created = snaps["lead_id"].map(created_at)
    horizon = pd.Timedelta(days=config.horizon_days)
    fit_s = snaps[((snap_created < test_start) & (snaps["as_of"] + horizon <= test_start)).to_numpy()].reset_index(drop=True)
    excluded = boundaries["excluded_snapshots"]
    say(
        f"data end {data_end.isoformat()} ({data.data_end_source}); snapshots: train {len(train_s)}, "
        f"validation {len(valid_s)}, test {len(test_s)}; the measured model learns from the {len(fit_s)} snapshots "
        f"whose label closed before the test period (train and validation choose its settings; "
        f"{excluded['train']} of them crossed from train into validation)"  # type: ignore[index]
    )
    lap("snapshots")
    all_s = pd.concat([fit_s, test_s], ignore_index=True)
    rows = build_features(data.leads, data.interactions, all_s, spec)
    fit_rows, test_rows = _take(rows, np.arange(len(fit_s))), _take(rows, np.arange(len(fit_s), len(all_s)))
    keys = pd.MultiIndex.from_frame(fit_s[["lead_id", "as_of"]])
    train_pos, valid_pos = (keys.get_indexer(pd.MultiIndex.from_frame(part[["lead_id", "as_of"]])) for part in (train_s, valid_s))
    say(f"features: {len(spec.feature_names())} per snapshot")
    lap("features")

    levels = category_levels(fit_rows, spec)
    names = spec.feature_names()
    fit = SplitFrames(fit_s, fit_rows, encode_matrix(fit_rows, names, levels))
    train, valid = (SplitFrames(part, _take(fit_rows, pos), fit.matrix[pos]) for part, pos in ((train_s, train_pos), (valid_s, valid_pos)))
    test = SplitFrames(test_s, test_rows, encode_matrix(test_rows, names, levels))
    # Lead creation, in seconds: the order of recency weights and of the cross-fitted blocks.
    fit_order = ((fit_s["lead_id"].map(created_at) - created_at.min()).dt.total_seconds()).to_numpy(dtype=np.float64)

    from training.candidates import cross_fit, fit_rounds, fit_stopped
    from training.selection import select_candidate

    candidate, chosen_how = Candidate(family="lightgbm"), None
    if selection is not None and len(selection.candidates()) > 1:
        as_of = (fit_s["as_of"] - created_at.min()).dt.total_seconds().to_numpy(dtype=np.float64)
        chosen = select_candidate(fit_rows, fit.y, as_of, spec, config, selection, say,
                                  matured_at=as_of + horizon.total_seconds())  # fmt: skip
        candidate, chosen_how = chosen.chosen, chosen.to_dict()
        lap("selection")

    params = config.lightgbm
    if candidate == Candidate(family="lightgbm"):
        booster = fit_booster(
            lightgbm_params(config, names),
            (train.matrix, train.y),
            (valid.matrix, valid.y),
            feature_names=names,
            categorical=[names.index(c) for c in spec.categorical_features()],
            max_rounds=params.max_rounds,
            early_stopping_rounds=params.early_stopping_rounds,
        )
        rounds = booster.current_iteration()
    else:
        _stopped, rounds = fit_stopped(candidate, (train.matrix, train.y, fit_order[train_pos]), (valid.matrix, valid.y), spec, levels, config)
    say(f"{candidate.name}: {rounds} trees (early stopping on validation)" if rounds else f"{candidate.name}: fit")
    warnings = []
    if not candidate.family.startswith("linear") and rounds < MIN_TREES:
        advice = settings_advice(data, config)
        warnings.append(
            f"early stopping kept {rounds} trees (fewer than {MIN_TREES}): the validation period gains little from "
            f"trees at horizon_days={config.horizon_days:g}, snapshot_offsets_days={config.snapshot_offsets_days}"
            + (f"; {advice}" if advice else "")
        )
        say(f"warning: {warnings[-1]}")
    lap("lightgbm")

    # One BLAS thread: these fits are many small products, and BLAS threads that spin-wait
    # made the logistic regression 4x slower on a busy 2-core machine (benchmarks/README.md).
    groups = fit_s["lead_id"].to_numpy()
    calibration, cal_losses, recent, p_recent = cross_fit(candidate, rounds, fit.matrix, fit.y, fit_order, groups, spec, levels, config)
    model_fit = fit_rounds(candidate, fit.matrix, fit.y, fit_order, spec, levels, config, rounds)
    lap("calibration")

    with threadpool_limits(limits=1, user_api="blas"):
        logistic = logistic_baseline(spec, config.seed)
        logistic.fit(_logistic_frame(fit.rows, spec), fit.y)
    lap("logistic_regression")

    grid_valid = grid.score_frame(valid.rows.to_frame(spec))
    grid_cal = _fit_one("platt", grid_valid, valid.y)
    for frame in (valid, test):
        frame.scores["model"] = calibration.apply(np.asarray(model_fit.predict(frame.matrix, raw_score=True)))
        frame.scores["logistic_regression"] = logistic.predict_proba(_logistic_frame(frame.rows, spec))[:, 1]
        frame.snapshots["grid_points"] = grid.score_frame(frame.rows.to_frame(spec))
        frame.scores["point_grid"] = grid_cal.apply(frame.snapshots["grid_points"].to_numpy())
    if truth_probability is not None:
        test.scores["oracle"] = truth_probability(test.snapshots, config.horizon_days)
    lap("baselines")

    metrics = {
        name: scorer_metrics(
            test.y,
            test.scores[name],
            n_bootstrap=config.n_bootstrap,
            seed=config.seed,
            groups=test.snapshots["lead_id"].to_numpy(),
        )
        for name in SCORERS
        if name in test.scores
    }
    say("metrics: test period, bootstrap by lead")
    lap("metrics")

    # Scale, tiers and MQL threshold from the cross-fitted probabilities of the latest leads
    # before the test period: scores of models of this recipe that had not seen them.
    p_valid = p_recent
    grid_mql_share = float(np.mean(grid.is_mql(grid.score_frame(_take(fit.rows, recent).to_frame(spec)))))
    # The model's MQL flag takes as many leads as the grid's MQL did on validation: same
    # sales capacity, better leads.
    mql_probability = float(np.quantile(p_valid, 1 - grid_mql_share)) if grid_mql_share > 0 else 1.0
    trained_at = datetime.now(UTC).isoformat(timespec="seconds")
    fingerprint = data_fingerprint(data)
    meta = BundleMeta(
        model_version=f"{trained_at[:10].replace('-', '')}-{content_hash(model_fit.model_to_string().encode())[:8]}",
        model_family=model_family_of(model_fit),
        trained_at=trained_at,
        horizon_days=config.horizon_days,
        feature_spec=spec,
        lead_schema=lead_schema_for(spec, data.schema),
        feature_names=names,
        categorical_levels=levels,
        calibration=calibration,
        score_quantiles=np.quantile(p_valid, np.linspace(0, 1, 101)).tolist(),
        tiers=Tiers(
            hot=float(np.quantile(p_valid, 1 - config.hot_share)),
            warm=float(np.quantile(p_valid, 1 - config.hot_share - config.warm_share)),
        ),
        mql_probability=mql_probability,
        grid=grid,
        metrics={name: {m: v["value"] for m, v in ms.items()} for name, ms in metrics.items()},
        training={
            "data": fingerprint,
            "split": boundaries,
            "n_snapshots": {"train": len(train_s), "validation": len(valid_s), "test": len(test_s)},
            "n_fit_snapshots": len(fit_s),
            "best_iteration": int(rounds),
            "fit": "every snapshot before the test period whose label closed before it starts; "
                   "validation chose the trees, a cross-fit on the latest leads the calibration",
            **({"selection": chosen_how} if chosen_how else {}),
            **({"warnings": warnings} if warnings else {}),
            "calibration_log_loss": cal_losses,
            "grid_mql_share_validation": grid_mql_share,
        },
        # What `leadscore monitor` compares served leads with (PSI per feature and probability).
        reference=reference_distribution(_served_like_rows(snaps, data, spec, boundaries, build_features), p_valid),
    )
    # Fit and engagement are placed among the same latest leads as the score, by this model's own contributions.
    model = ScoringModel(model_fit, meta).with_subscore_scale(fit.matrix[recent])
    # Trend thresholds from the 7-day score changes of the validation snapshots (`training.trend`).
    from training.trend import snapshot_trends, validation_trend_thresholds, with_trend_thresholds

    model = with_trend_thresholds(model, validation_trend_thresholds(model, data, valid_s, valid.matrix, build_features))
    test_trend = snapshot_trends(model, data, test_s, test.matrix, build_features)
    lap("trend")
    split = {
        **boundaries,
        "n_snapshots": meta.training["n_snapshots"],
        "data_end": data_end.isoformat(),
        "data_end_source": data.data_end_source,
    }
    return TrainingResult(
        model, metrics, split, train, valid, test, timings, logistic, fit, candidate, int(rounds), chosen_how, test_trend
    )
