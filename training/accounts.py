"""The account model: LightGBM on account snapshots, measured beside the naive roll-ups.

An account snapshot `(account_id, as_of)` is taken at `snapshot_offsets_days` after the
account's first contact while it is unconverted; its label is "the account converted in
(as_of, as_of + horizon]", used only once that window closed before the data end. Snapshots are
split by the account's first-contact time exactly as lead snapshots are by the lead's creation
(`training.pipeline.time_split`): test is the last `test_fraction` of the accounts, validation
the `valid_fraction` before it, each period's labels closed before the next starts.

The contacts' lead probabilities are features, so they must not come from a lead model that
learned those contacts' futures. Chosen here:

- test snapshots: a lead model fit on every lead snapshot whose label closed before the account
  test period starts (the period before);
- train and validation snapshots: cross-fitted by account: the accounts before the test period
  are cut into `LEAD_FOLDS` folds, and a fold's contacts are scored by a lead model fit (on
  the same period) without any lead of that fold's accounts.

The account model is compared on the same test snapshots with the naive roll-ups of the same
contact probabilities (the max, and the noisy-or 1 - prod(1 - p)) and, on simulated data, with
the account oracle; 95 % bootstrap intervals resample whole accounts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.accounts import (
    ACCOUNT_ATTRIBUTE_PREFIX,
    ACCOUNT_FEATURES,
    ACCOUNT_ID,
    account_contacts,
    account_features,
    account_level_attributes,
    account_snapshot_times,
    account_table,
)
from features.contract import Dataset
from features.engine import FeatureRows, snapshot_features
from features.snapshots import conversion_labels, matured_label_cutoff, snapshot_times
from features.spec import FeatureSpec
from model.accounts import AccountMeta, AccountModel
from model.bundle import Tiers, encode_matrix
from training.config import TrainingConfig
from training.metrics import _metrics_from_weights, metrics_table, scorer_metrics
from training.pipeline import _fit_one, check_enough, lightgbm_params, time_split

LEAD_FOLDS = 3
ACCOUNT_SCORERS = ("account_model", "max_rollup", "noisy_or_rollup", "oracle")
LEAD_SCORES_CHOICE = (
    "test snapshots: the lead model fit on lead snapshots whose label closed before the account test period; "
    f"train and validation snapshots: cross-fitted by account ({LEAD_FOLDS} folds), each fold scored by a lead "
    "model of the same period that never saw a lead of that fold's accounts"
)
AccountOracle = Callable[[pd.DataFrame, float], np.ndarray]
Progress = Callable[[str], None]


@dataclass
class AccountFrames:
    """One period's account snapshots with their features and every scorer's probability."""

    snapshots: pd.DataFrame  # account_id, as_of, offset_days, label
    rows: FeatureRows
    scores: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def y(self) -> np.ndarray:
        return self.snapshots["label"].to_numpy()

    def matrix(self, names: list[str], levels: dict[str, list[str]]) -> np.ndarray:
        return encode_matrix(self.rows, names, levels)


@dataclass
class AccountTrainingResult:
    model: AccountModel
    metrics: dict[str, dict[str, dict[str, float]]]
    # ROC AUC of the account model minus each other scorer's, paired bootstrap by account.
    gains: dict[str, dict[str, float]]
    split: dict[str, Any]
    train: AccountFrames
    valid: AccountFrames
    test: AccountFrames
    timings: dict[str, float] = field(default_factory=dict)


def account_outcomes(leads: pd.DataFrame, accounts: pd.DataFrame | None) -> pd.DataFrame:
    """Every account of the leads with its outcome.

    Args:
        leads: `lead_id`, `created_at`, `converted_at`, `account_id`.
        accounts: `account_id`, `converted_at` (a closed deal), or None: an account then
            converts when its first contact converts.

    Returns:
        `account_id`, `created_at` (first contact), `n_contacts`, `converted_at`.

    Raises:
        ValueError: `accounts` lacks a column, or names an account_id no lead carries.
    """
    table = account_table(leads)
    if accounts is None:
        members = leads[leads[ACCOUNT_ID].notna()]
        first = members.groupby(ACCOUNT_ID)["converted_at"].min()
        table["converted_at"] = pd.to_datetime(table[ACCOUNT_ID].map(first), utc=True)
        return table
    missing = [c for c in (ACCOUNT_ID, "converted_at") if c not in accounts.columns]
    if missing:
        raise ValueError(f"accounts: missing columns {missing}; found {list(accounts.columns)}")
    unknown = sorted(set(accounts[ACCOUNT_ID].astype(str)) - set(table[ACCOUNT_ID]))
    if unknown:
        raise ValueError(f"accounts: {len(unknown)} account_id(s) no lead carries (e.g. {', '.join(unknown[:3])})")
    converted = pd.to_datetime(accounts.set_index(accounts[ACCOUNT_ID].astype(str))["converted_at"], utc=True)
    table["converted_at"] = pd.to_datetime(table[ACCOUNT_ID].map(converted), utc=True)
    return table


class LeadScorer:
    """A lean lead model (LightGBM on lead snapshots, early stopping on its latest leads) for contact scores."""

    def __init__(self, booster: lgb.Booster, spec: FeatureSpec, levels: dict[str, list[str]]) -> None:
        self.booster, self.spec, self.levels = booster, spec, levels

    def score(self, leads: pd.DataFrame, interactions: pd.DataFrame, contacts: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Probability and raw log-odds of each (lead_id, as_of) row of `contacts`."""
        if contacts.empty:
            return np.zeros(0), np.zeros(0)
        rows = snapshot_features(leads, interactions, contacts[["lead_id", "as_of"]].reset_index(drop=True), self.spec)
        raw = np.asarray(self.booster.predict(encode_matrix(rows, self.spec.feature_names(), self.levels), raw_score=True))
        return 1.0 / (1.0 + np.exp(-raw)), raw


def fit_lead_scorer(
    leads: pd.DataFrame,
    interactions: pd.DataFrame,
    spec: FeatureSpec,
    config: TrainingConfig,
    label_cutoff: pd.Timestamp,
    exclude: set[str] | frozenset[str] = frozenset(),
) -> LeadScorer:
    """Fit a lead model on lead snapshots whose label closed by `label_cutoff`, leaving out `exclude`.

    Args:
        leads: Validated leads.
        interactions: Validated interactions.
        spec: Lead feature specification.
        config: Horizon, offsets and LightGBM settings.
        label_cutoff: Only snapshots with `as_of + horizon <= label_cutoff` are learned from.
        exclude: Lead ids not to learn from (a cross-fitting fold).

    Raises:
        NotEnoughDataError: Too few lead snapshots to learn from.
    """
    usable = leads[~leads["lead_id"].isin(exclude)]
    snaps = snapshot_times(usable, config.snapshot_offsets_days, matured_label_cutoff(label_cutoff, config.horizon_days))
    snaps["label"] = conversion_labels(snaps, usable, config.horizon_days)
    check_enough("lead snapshots for the contacts' scores", snaps, 200, 20)
    rows = snapshot_features(usable, interactions, snaps, spec)
    levels = {name: sorted({v for v in rows.categorical[name] if v is not None}) for name in spec.categorical_features()}
    names = spec.feature_names()
    matrix = encode_matrix(rows, names, levels)
    # Early stopping on the latest 15 % of the leads by creation: later leads are what it scores.
    created = snaps["lead_id"].map(usable.set_index("lead_id")["created_at"])
    late = (created >= created.quantile(0.85)).to_numpy()
    params = {**lightgbm_params(config, names), "learning_rate": max(config.lightgbm.learning_rate, 0.05)}
    categorical = [names.index(c) for c in spec.categorical_features()]
    y = snaps["label"].to_numpy()
    dtrain = lgb.Dataset(matrix[~late], y[~late], feature_name=names, categorical_feature=categorical, free_raw_data=False)
    dvalid = lgb.Dataset(matrix[late], y[late], reference=dtrain)
    stopped = lgb.train(params, dtrain, num_boost_round=config.lightgbm.max_rounds, valid_sets=[dvalid],
                        callbacks=[lgb.early_stopping(config.lightgbm.early_stopping_rounds, verbose=False)])  # fmt: skip
    rounds = max(stopped.best_iteration or stopped.current_iteration(), 1)
    full = lgb.train(params, lgb.Dataset(matrix, y, feature_name=names, categorical_feature=categorical), num_boost_round=rounds)
    return LeadScorer(full, spec, levels)


def _account_folds(account_ids: np.ndarray, seed: int) -> dict[str, int]:
    unique = np.unique(account_ids.astype(str))
    fold = np.random.default_rng(seed).permutation(unique.size) % LEAD_FOLDS
    return dict(zip(unique.tolist(), fold.tolist(), strict=True))


def _account_params(config: TrainingConfig) -> dict[str, Any]:
    # Fewer rows than lead snapshots: smaller leaves than the lead model's.
    return {**lightgbm_params(config), "min_child_samples": min(config.lightgbm.min_child_samples, 50)}


def _columns(frames: AccountFrames, attributes: tuple[list[str], list[str]]) -> tuple[list[str], dict[str, list[str]], list[int]]:
    """The account model's feature names, its category levels (those of `frames`) and the categorical positions."""
    categorical = [ACCOUNT_ATTRIBUTE_PREFIX + c for c in attributes[0]]
    names = [*categorical, *ACCOUNT_FEATURES, *(ACCOUNT_ATTRIBUTE_PREFIX + c for c in attributes[1])]
    levels = {name: sorted({v for v in frames.rows.categorical[name] if v is not None}) for name in categorical}
    return names, levels, list(range(len(categorical)))


def _matured_snapshots(table: pd.DataFrame, config: TrainingConfig, data_end: pd.Timestamp) -> pd.DataFrame:
    """Account snapshots whose label window closed by `data_end`, with their 0/1 label."""
    snaps = account_snapshot_times(table, config.snapshot_offsets_days, matured_label_cutoff(data_end, config.horizon_days))
    snaps["label"] = conversion_labels(snaps.rename(columns={ACCOUNT_ID: "lead_id"}), table.rename(columns={ACCOUNT_ID: "lead_id"}), config.horizon_days)
    return snaps


def _company_attributes(leads: pd.DataFrame, spec: FeatureSpec) -> tuple[list[str], list[str]]:
    """The company's attributes (categorical, numeric): those its contacts agree on, among `leads`."""
    company = account_level_attributes(leads, [*spec.categorical, *spec.numeric])
    return [c for c in company if c in spec.categorical], [c for c in company if c in spec.numeric]


def _cross_fitted_frames(
    learn_from: pd.DataFrame,
    leads: pd.DataFrame,
    interactions: pd.DataFrame,
    snapshots: pd.DataFrame,
    spec: FeatureSpec,
    config: TrainingConfig,
    label_cutoff: pd.Timestamp,
    attributes: tuple[list[str], list[str]],
) -> AccountFrames:
    """Features of account snapshots whose contacts are scored cross-fitted by account.

    The snapshots' accounts are cut into `LEAD_FOLDS` folds; a fold's contacts are scored by a
    lead model fit on `learn_from` (labels closed by `label_cutoff`) without any lead of the fold's accounts.
    """
    folds = _account_folds(snapshots[ACCOUNT_ID].to_numpy(), config.seed)
    account_of_lead = leads.set_index("lead_id")[ACCOUNT_ID]
    fold_scorers = []
    for k in range(LEAD_FOLDS):
        fold_accounts = {a for a, f in folds.items() if f == k}
        excluded = set(account_of_lead[account_of_lead.isin(fold_accounts)].index.astype(str))
        fold_scorers.append(fit_lead_scorer(learn_from, interactions, spec, config, label_cutoff, excluded))

    def cross_fitted(account_ids: np.ndarray) -> list[tuple[np.ndarray, LeadScorer]]:
        fold_of = np.array([folds[str(a)] for a in account_ids], dtype=np.int64)
        return [(fold_of == k, fold_scorers[k]) for k in range(LEAD_FOLDS)]

    return _frames(leads, interactions, snapshots, cross_fitted, attributes)


def _frames(
    leads: pd.DataFrame,
    interactions: pd.DataFrame,
    snapshots: pd.DataFrame,
    scorer_of: Callable[[np.ndarray], list[tuple[np.ndarray, LeadScorer]]],
    attributes: tuple[list[str], list[str]],
) -> AccountFrames:
    """Features of account snapshots, each contact row scored by the lead scorer `scorer_of` assigns it."""
    contacts = account_contacts(leads, snapshots)
    p, raw = np.zeros(len(contacts)), np.zeros(len(contacts))
    for mask, scorer in scorer_of(snapshots[ACCOUNT_ID].to_numpy()[contacts["snapshot"].to_numpy()]):
        if mask.any():
            p[mask], raw[mask] = scorer.score(leads, interactions, contacts[mask])
    return AccountFrames(snapshots, account_features(leads, interactions, snapshots, contacts, p, raw, *attributes))


def run_account_training(
    leads: pd.DataFrame,
    interactions: pd.DataFrame,
    spec: FeatureSpec,
    config: TrainingConfig,
    data_end: pd.Timestamp,
    accounts: pd.DataFrame | None = None,
    oracle: AccountOracle | None = None,
    progress: Progress | None = None,
) -> AccountTrainingResult:
    """Train the account model and measure it beside the roll-ups (and the oracle) on the test accounts.

    Args:
        leads: Validated leads with `account_id` (missing: no account).
        interactions: Validated interactions.
        spec: Lead feature specification (for the contacts' lead model).
        config: Horizon, offsets, fractions, LightGBM settings, bootstrap size, tier shares.
        data_end: The export time: labels mature against it.
        accounts: Account outcomes (`account_id`, `converted_at`); None: an account converts
            with its first converted contact (`account_outcomes`).
        oracle: For simulated data, `(snapshots[account_id, as_of], horizon) -> p`.
        progress: Called with a short message at each step.

    Returns:
        The account model (fit on every snapshot before the test period whose label closed
        before it), per-scorer test metrics and the period frames.

    Raises:
        NotEnoughDataError: A period has too few account snapshots or conversions.
    """
    import time

    say = progress or (lambda _msg: None)
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    table = account_outcomes(leads, accounts)
    snaps = _matured_snapshots(table, config, data_end)
    as_leads = table.rename(columns={ACCOUNT_ID: "lead_id"})
    train_s, valid_s, test_s, boundaries = time_split(snaps.rename(columns={ACCOUNT_ID: "lead_id"}), as_leads, config)
    train_s, valid_s, test_s = (part.rename(columns={"lead_id": ACCOUNT_ID}) for part in (train_s, valid_s, test_s))
    check_enough("account train period", train_s, 200, 20, advice="Add more accounts or history, or shorten horizon_days.")
    check_enough("account validation period", valid_s, 100, 10, advice="Add more accounts or history, or shorten horizon_days.")
    check_enough("account test period", test_s, 100, 10, advice="Add more accounts or history, or shorten horizon_days.")
    test_start = pd.Timestamp(boundaries["test_start"])
    created = snaps[ACCOUNT_ID].map(table.set_index(ACCOUNT_ID)["created_at"])
    horizon = pd.Timedelta(days=config.horizon_days)
    fit_s = snaps[((created < test_start) & (snaps["as_of"] + horizon <= test_start)).to_numpy()].reset_index(drop=True)
    say(f"account snapshots: train {len(train_s)}, validation {len(valid_s)}, test {len(test_s)} (test accounts from {test_start.date()})")

    # Contacts' lead scores: the period before for the test period, cross-fitted by account before it.
    before_test = leads[leads["created_at"] < test_start]
    attributes = _company_attributes(before_test, spec)
    fit = _cross_fitted_frames(before_test, leads, interactions, fit_s, spec, config, test_start, attributes)
    test_scorer = fit_lead_scorer(before_test, interactions, spec, config, test_start)
    test = _frames(leads, interactions, test_s, lambda ids: [(np.ones(ids.size, dtype=bool), test_scorer)], attributes)
    timings["lead_models_and_features"] = round(time.perf_counter() - clock, 3)
    say(f"lead models for the contacts' scores: {LEAD_FOLDS} cross-fitted folds and one for the test period")
    keys = pd.MultiIndex.from_frame(fit_s[[ACCOUNT_ID, "as_of"]])
    train_pos, valid_pos = (keys.get_indexer(pd.MultiIndex.from_frame(part[[ACCOUNT_ID, "as_of"]])) for part in (train_s, valid_s))
    train, valid = (AccountFrames(part, _take(fit.rows, pos)) for part, pos in ((train_s, train_pos), (valid_s, valid_pos)))

    names, levels, positions = _columns(fit, attributes)
    params = _account_params(config)
    dtrain = lgb.Dataset(train.matrix(names, levels), train.y, feature_name=names, categorical_feature=positions, free_raw_data=False)
    dvalid = lgb.Dataset(valid.matrix(names, levels), valid.y, reference=dtrain)
    stopped = lgb.train(params, dtrain, num_boost_round=config.lightgbm.max_rounds, valid_sets=[dvalid],
                        callbacks=[lgb.early_stopping(config.lightgbm.early_stopping_rounds, verbose=False)])  # fmt: skip
    rounds = max(stopped.best_iteration or stopped.current_iteration(), 1)
    calibration = _fit_one("platt", np.asarray(stopped.predict(valid.matrix(names, levels), num_iteration=rounds, raw_score=True)), valid.y)
    p_valid = calibration.apply(np.asarray(stopped.predict(valid.matrix(names, levels), num_iteration=rounds, raw_score=True)))
    # The measured and saved model learns from every snapshot whose label closed before the test period.
    booster = lgb.train(params, lgb.Dataset(fit.matrix(names, levels), fit.y, feature_name=names, categorical_feature=positions),
                        num_boost_round=rounds)  # fmt: skip
    say(f"account model: {rounds} trees (early stopping on validation), refit on {len(fit_s)} snapshots")

    meta = AccountMeta(
        horizon_days=config.horizon_days,
        feature_names=names,
        categorical_levels=levels,
        company_categorical=attributes[0],
        company_numeric=attributes[1],
        calibration=calibration,
        tiers=Tiers(hot=float(np.quantile(p_valid, 1 - config.hot_share)), warm=float(np.quantile(p_valid, 1 - config.hot_share - config.warm_share))),
        trained_at=datetime.now(UTC).isoformat(timespec="seconds"),
        lead_scores=LEAD_SCORES_CHOICE,
        training={"split": boundaries, "n_snapshots": {"train": len(train_s), "validation": len(valid_s), "test": len(test_s)},
                  "n_fit_snapshots": len(fit_s), "trees": int(rounds), "n_accounts": int(len(table))},  # fmt: skip
    )
    model = AccountModel(booster, meta)
    test.scores["account_model"] = model.probability(model.matrix(test.rows))
    test.scores["max_rollup"] = np.nan_to_num(test.rows.numeric["p_max"], nan=0.0)
    test.scores["noisy_or_rollup"] = test.rows.numeric["p_noisy_or"]
    if oracle is not None:
        test.scores["oracle"] = oracle(test.snapshots, config.horizon_days)
    groups = test.snapshots[ACCOUNT_ID].to_numpy()
    metrics = {
        name: scorer_metrics(test.y, test.scores[name], n_bootstrap=config.n_bootstrap, seed=config.seed, groups=groups)
        for name in ACCOUNT_SCORERS
        if name in test.scores
    }
    gains = {
        name: paired_auc_gain(test.y, test.scores["account_model"], test.scores[name], groups, n_bootstrap=config.n_bootstrap, seed=config.seed)
        for name in ACCOUNT_SCORERS[1:]
        if name in test.scores
    }
    model.meta = model.meta.model_copy(update={"metrics": {n: {m: v["value"] for m, v in ms.items()} for n, ms in metrics.items()}})
    timings["total"] = round(time.perf_counter() - clock, 3)
    split = {**boundaries, "n_test_accounts": int(test.snapshots[ACCOUNT_ID].nunique()), "data_end": data_end.isoformat()}
    return AccountTrainingResult(model, metrics, gains, split, train, valid, test, timings)


SERVED_LEAD_SCORES = (
    f"cross-fitted by account ({LEAD_FOLDS} folds): each fold's contacts scored by a lead model fit on every lead "
    "snapshot whose label closed by the data end, without any lead of that fold's accounts"
)


def refit_account_model(
    result: AccountTrainingResult,
    leads: pd.DataFrame,
    interactions: pd.DataFrame,
    spec: FeatureSpec,
    config: TrainingConfig,
    data_end: pd.Timestamp,
    accounts: pd.DataFrame | None = None,
) -> AccountModel:
    """The served account model: the measured settings refit on every account snapshot whose label closed by the data end.

    As the lead model is (`training.refit`): the test period measured the method; the served
    model then learns from the newest matured accounts too, with the trees early stopping chose.
    The contacts' scores of those rows are cross-fitted by account on every matured lead
    snapshot. Calibration and tiers stay the measured model's (from its validation period), and
    so do its metrics; `training.served` says what the served model learned from.

    Raises:
        NotEnoughDataError: Too few lead snapshots for a fold's lead model.
    """
    table = account_outcomes(leads, accounts)
    snaps = _matured_snapshots(table, config, data_end)
    attributes = _company_attributes(leads, spec)
    frames = _cross_fitted_frames(leads, leads, interactions, snaps, spec, config, data_end, attributes)
    names, levels, positions = _columns(frames, attributes)
    measured = result.model.meta
    rounds = int(measured.training["trees"])
    booster = lgb.train(_account_params(config), lgb.Dataset(frames.matrix(names, levels), frames.y, feature_name=names,
                        categorical_feature=positions), num_boost_round=rounds)  # fmt: skip
    served = {
        "labels_through": matured_label_cutoff(data_end, config.horizon_days).isoformat(),
        "trained_through": pd.Timestamp(snaps["as_of"].max()).isoformat(),
        "n_snapshots": len(snaps),
        "n_conversions": int(frames.y.sum()),
        "refit": f"{rounds} trees (the measured model's) on every account snapshot whose label closed by the data end; "
                 "calibration, tiers and metrics are the measured model's",
    }  # fmt: skip
    meta = measured.model_copy(update={
        "feature_names": names, "categorical_levels": levels, "company_categorical": attributes[0],
        "company_numeric": attributes[1], "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "lead_scores": SERVED_LEAD_SCORES, "training": {**measured.training, "served": served},
    })  # fmt: skip
    return AccountModel(booster, meta)


def paired_auc_gain(
    y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, groups: np.ndarray, *, n_bootstrap: int, seed: int
) -> dict[str, float]:
    """ROC AUC of `p_a` minus that of `p_b` on the same rows, with a paired 95 % bootstrap interval.

    Each resample draws whole groups (accounts) once and scores both on it, so the interval is
    that of the difference, narrower than two separate intervals suggest.

    Args:
        y: 0/1 labels.
        p_a, p_b: Two scores of the same rows.
        groups: Group of each row (the bootstrap draws groups).
        n_bootstrap: Resamples (0: NaN bounds).
        seed: Seed of the draws.

    Returns:
        `value`, `ci_low`, `ci_high`.
    """
    y = np.asarray(y, dtype=np.float64)
    codes, uniques = pd.factorize(np.asarray(groups))
    order_a, order_b = np.argsort(-p_a, kind="stable"), np.argsort(-p_b, kind="stable")
    whole = np.ones((1, y.size))
    value = float(_metrics_from_weights(y[order_a], p_a[order_a], whole)["roc_auc"][0] - _metrics_from_weights(y[order_b], p_b[order_b], whole)["roc_auc"][0])
    if n_bootstrap == 0:
        return {"value": value, "ci_low": float("nan"), "ci_high": float("nan")}
    rng = np.random.default_rng(seed)
    gains = []
    for lo in range(0, n_bootstrap, 50):
        size = min(50, n_bootstrap - lo)
        draws = rng.integers(0, uniques.size, size=(size, uniques.size)) + uniques.size * np.arange(size)[:, None]
        counts = np.bincount(draws.ravel(), minlength=size * uniques.size).reshape(size, uniques.size)[:, codes].astype(float)
        auc_a = _metrics_from_weights(y[order_a], p_a[order_a], counts[:, order_a])["roc_auc"]
        auc_b = _metrics_from_weights(y[order_b], p_b[order_b], counts[:, order_b])["roc_auc"]
        gains.append(auc_a - auc_b)
    gain = np.concatenate(gains)
    gain = gain[~np.isnan(gain)]
    return {"value": value, "ci_low": float(np.quantile(gain, 0.025)), "ci_high": float(np.quantile(gain, 0.975))}


def _take(rows: FeatureRows, index: np.ndarray) -> FeatureRows:
    return FeatureRows(categorical={k: v[index] for k, v in rows.categorical.items()}, numeric={k: v[index] for k, v in rows.numeric.items()})


def account_report(result: AccountTrainingResult, top: int = 20) -> tuple[str, pd.DataFrame]:
    """What a report shows of the account model: its test metrics and the test accounts ranked.

    Args:
        result: `run_account_training`'s result.
        top: Rows of the ranked table.

    Returns:
        (markdown table of every scorer's test metrics with 95 % intervals, the `top` test
        account snapshots by the account model's probability: `account_id`, `as_of`,
        `probability`, `max_rollup`, `noisy_or_rollup`, `n_contacts`, `n_roles_covered`,
        `converted` (the label)).
    """
    test = result.test
    ranked = pd.DataFrame({
        ACCOUNT_ID: test.snapshots[ACCOUNT_ID].to_numpy(), "as_of": test.snapshots["as_of"].to_numpy(),
        "probability": test.scores["account_model"], "max_rollup": test.scores["max_rollup"],
        "noisy_or_rollup": test.scores["noisy_or_rollup"], "n_contacts": test.rows.numeric["n_contacts"].astype(int),
        "n_roles_covered": test.rows.numeric["n_roles_covered"].astype(int), "converted": test.y,
    })  # fmt: skip
    ranked = ranked.sort_values("probability", ascending=False, kind="stable").head(top).reset_index(drop=True)
    return metrics_table(result.metrics), ranked


MIN_ACCOUNTS = 200  # fewer accounts with a matured label: no account model


def train_accounts_for_bundle(
    dataset: Dataset, spec: FeatureSpec, config: TrainingConfig, folder: Path | None, say: Progress
) -> AccountTrainingResult | None:
    """The account model `leadscore train` saves in the bundle, when the leads carry an `account_id`.

    Account outcomes come from the folder's `accounts.csv` (`account_id`, `converted_at`) when
    there is one, else from the contacts' conversions (`account_outcomes`); a folder written by
    `simulator.accounts` also gives the account oracle. Too few accounts, or too few in a period,
    is said and gives None: the bundle then has no account model.

    Args:
        dataset: The validated training data.
        spec: The lead model's feature specification.
        config: Training settings.
        folder: The data folder (None for a `data:` section).
        say: Where to print what happened.
    """
    from simulator.accounts import read_account_truth, true_account_conversion_probability
    from training.pipeline import NotEnoughDataError

    accounts = None
    oracle: AccountOracle | None = None
    if folder is not None and (folder / "accounts.csv").is_file():
        accounts = pd.read_csv(folder / "accounts.csv", dtype={ACCOUNT_ID: str})
        if (folder / "account_truth.csv").is_file():
            truth = read_account_truth(folder)

            def oracle(snaps: pd.DataFrame, horizon: float) -> np.ndarray:
                return true_account_conversion_probability(truth, snaps[ACCOUNT_ID], snaps["as_of"], horizon)

    n_accounts = int(dataset.leads[ACCOUNT_ID].astype("string").str.strip().replace("", pd.NA).nunique())
    if n_accounts < MIN_ACCOUNTS:
        say(f"accounts: {n_accounts} account(s), fewer than {MIN_ACCOUNTS}: no account model")
        return None
    try:
        result = run_account_training(dataset.leads, dataset.interactions, spec, config, dataset.data_end, accounts, oracle)
    except NotEnoughDataError as error:
        say(f"accounts: no account model: {error}")
        return None
    say("accounts (test period):\n" + metrics_table({n: {"roc_auc": m["roc_auc"]} for n, m in result.metrics.items()}))
    try:
        served = refit_account_model(result, dataset.leads, dataset.interactions, spec, config, dataset.data_end, accounts)
    except NotEnoughDataError as error:
        say(f"accounts: the served account model is the measured one (the refit on every matured account could not fit: {error})")
        return result
    trained = served.meta.training["served"]
    say(f"accounts: served model refit on {trained['n_snapshots']:,} account snapshots whose label closed by "
        f"{trained['labels_through'][:10]} (measured on accounts first seen from {str(result.split['test_start'])[:10]})")  # fmt: skip
    return dataclasses.replace(result, model=served)
