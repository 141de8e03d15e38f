"""The model families training chooses among, each fit the same way on rows in time order.

* `lightgbm`: today's LightGBM under its complexity budget (`training.lightgbm`).
* `lightgbm_linear_tree`: the same trees with a linear model in each leaf (LightGBM's
  `linear_tree`): it extrapolates beyond the numbers it was trained on.
* `linear_bins`: a regularised logistic regression on one-hot categories and numbers cut into
  quantile bins (`model.linear`, kind `bins`): the shape of each number, flat beyond its range.
* `linear_slopes`: the same on one-hot categories and a slope per number (log1p for numbers
  spanning orders of magnitude): it extrapolates.

Each may weight recent rows more (`half_life`: the weight halves every `half_life` of the
training rows' span, counted back from the newest): when what converts drifts, the newest
leads say most about the next ones. A LightGBM fit stops early and is calibrated on the newest
`valid_fraction` of its rows, which it does not learn from, as `training.static` does; a linear
fit has no rounds to stop, learns from every row and keeps its own logistic probabilities.
Models are stored without pickle: LightGBM's text model, or the linear model's JSON. Settings
are chosen on time by `training.selection`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import lightgbm as lgb
import numpy as np
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from features.engine import FeatureRows
from features.spec import FeatureSpec
from model.bundle import Calibration, encode_matrix
from model.linear import LinearModel, LinearTerm
from training.config import TrainingConfig
from training.pipeline import _take, fit_calibration, lightgbm_params
from training.selection_config import Candidate
from training.static import ONE_THREAD_BELOW_ROWS, static_category_levels

N_BINS = 8
# A number whose largest value is this many times its median size is read on a log scale by
# `linear_slopes` (a balance in euros, a count of visits), so that a few large values do not
# set its slope.
LOG_SPAN = 100.0
LINEAR_TREE_LAMBDA = 1.0


@dataclass
class FittedCandidate:
    """A candidate fit on some rows: the model, its calibration and what was learned at fit time.

    The attribute names are those of `training.static.FittedBooster`, so `run_static_training`
    measures and bundles either.
    """

    candidate: Candidate
    booster: lgb.Booster | LinearModel
    levels: dict[str, list[str]]
    calibration: Calibration
    best_iteration: int
    valid_probability: np.ndarray
    calibration_losses: dict[str, float]


def recency_weights(n: int, half_life: float | None, order: np.ndarray | None = None) -> np.ndarray | None:
    """Per row, 0.5 ** (rows newer than it / (half_life * n)); None for equal weights.

    Args:
        n: Number of rows.
        half_life: Share of the rows over which the weight halves (None: no weighting).
        order: Acquisition order of the rows (None: the rows are in order).
    """
    if half_life is None:
        return None
    rank = np.empty(n, dtype=np.float64)
    rank[np.argsort(order, kind="stable") if order is not None else np.arange(n)] = np.arange(n)
    return np.power(0.5, (n - 1 - rank) / (half_life * n))


def _fit_valid_parts(n: int, order: np.ndarray | None, valid_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    ranked = np.argsort(order, kind="stable") if order is not None else np.arange(n)
    n_valid = max(1, int(round(n * valid_fraction)))
    return ranked[:-n_valid], ranked[-n_valid:]


def fit_candidate(
    candidate: Candidate,
    rows: FeatureRows,
    y: np.ndarray,
    spec: FeatureSpec,
    config: TrainingConfig,
    *,
    order: np.ndarray | None = None,
) -> FittedCandidate:
    """Fit on all but the newest `valid_fraction` of the rows; stop early and calibrate on those.

    Args:
        candidate: Family and settings.
        rows: Features of the training leads.
        y: Their outcomes (0/1).
        spec: Feature specification.
        config: LightGBM settings, `valid_fraction` and `seed`.
        order: Acquisition order (None: the rows are in order).

    Returns:
        The fitted candidate; its calibration was fit on its own scores of rows it never saw.
    """
    fit_part, valid_part = _fit_valid_parts(len(y), order, config.valid_fraction)
    names = spec.feature_names()
    if candidate.family.startswith("linear"):
        return _fit_linear_candidate(candidate, rows, y, spec, config, order, valid_part)
    levels = static_category_levels(_take(rows, fit_part), spec)
    fit_matrix = encode_matrix(_take(rows, fit_part), names, levels)
    valid_matrix = encode_matrix(_take(rows, valid_part), names, levels)
    weights = recency_weights(len(fit_part), candidate.half_life, None if order is None else order[fit_part])
    model, best = _fit_family(candidate, fit_matrix, y[fit_part], weights, spec, levels, config, (valid_matrix, y[valid_part]))
    valid_raw = np.asarray(model.predict(valid_matrix, raw_score=True))
    with threadpool_limits(limits=1, user_api="blas"):
        calibration, losses = fit_calibration(valid_raw, y[valid_part], config.seed)
    return FittedCandidate(candidate, model, levels, calibration, best, calibration.apply(valid_raw), losses)


def _fit_linear_candidate(
    candidate: Candidate,
    rows: FeatureRows,
    y: np.ndarray,
    spec: FeatureSpec,
    config: TrainingConfig,
    order: np.ndarray | None,
    newest: np.ndarray,
) -> FittedCandidate:
    # A linear model has no rounds to stop early: it learns from every row, the newest most of
    # all, which a drifting funnel needs. Its own logistic probabilities are its calibration (an
    # L2-regularised fit of a few hundred weights on thousands of rows); the tiers and the 0-100
    # scale come from its probabilities of the newest `valid_fraction` rows.
    levels = static_category_levels(rows, spec)
    matrix = encode_matrix(rows, spec.feature_names(), levels)
    weights = recency_weights(len(y), candidate.half_life, order)
    model, best = _fit_family(candidate, matrix, y, weights, spec, levels, config, None)
    identity = Calibration(method="platt", a=1.0, b=0.0)
    newest_raw = np.asarray(model.predict(matrix[newest], raw_score=True))
    return FittedCandidate(candidate, model, levels, identity, best, identity.apply(newest_raw), {})


def refit_candidate(
    fitted: FittedCandidate,
    rows: FeatureRows,
    y: np.ndarray,
    spec: FeatureSpec,
    config: TrainingConfig,
    calibration: Calibration,
    *,
    order: np.ndarray | None = None,
) -> FittedCandidate:
    """The same candidate refit on every row, its settings carried over (trees: as many as early stopping chose).

    Nothing is held out, so the calibration is given: `cross_fitted_calibration` fits it on
    this same recipe's scores of recent rows it had not seen.
    """
    names = spec.feature_names()
    levels = static_category_levels(rows, spec)
    matrix = encode_matrix(rows, names, levels)
    weights = recency_weights(len(y), fitted.candidate.half_life, order)
    model, best = _fit_family(fitted.candidate, matrix, y, weights, spec, levels, config, None, rounds=fitted.best_iteration)
    return FittedCandidate(fitted.candidate, model, levels, calibration, best, fitted.valid_probability, fitted.calibration_losses)


def fit_served_recipe(
    candidate: Candidate,
    rows: FeatureRows,
    y: np.ndarray,
    spec: FeatureSpec,
    config: TrainingConfig,
    *,
    order: np.ndarray | None = None,
) -> FittedCandidate:
    """The candidate fit as the served model is: `fit_candidate` chooses the trees, then a refit on every row.

    What a test period measures should be the recipe that serves: the served model is refit on
    every row (`training.selection.served_refit`), so the measured one is too, on the rows it
    may learn from. Its calibration is cross-fitted with that recipe on the latest rows.

    Returns:
        The refit candidate; `valid_probability` holds the calibrated cross-fitted scores of the
        latest rows (for the score scale, tiers and MQL threshold).

    Raises:
        ValueError: Too few recent rows to cross-fit the calibration.
    """
    fitted = fit_candidate(candidate, rows, y, spec, config, order=order)
    calibration, losses, p = cross_fitted_calibration(fitted, rows, y, spec, config, order)
    refit = refit_candidate(fitted, rows, y, spec, config, calibration, order=order)
    return replace(refit, valid_probability=p, calibration_losses=losses)


def cross_fitted_calibration(
    fitted: FittedCandidate,
    rows: FeatureRows,
    y: np.ndarray,
    spec: FeatureSpec,
    config: TrainingConfig,
    order: np.ndarray | None,
) -> tuple[Calibration, dict[str, float], np.ndarray]:
    """The calibration of `refit_candidate`'s model: the recipe cross-fitted on the latest rows.

    Each block of the latest rows (`training.crossfit.latest_blocks`, by `order`, else by row
    position) is scored by the candidate refit the same way on every other row.

    Returns:
        The calibration map, its cross-fitted log losses, and the calibrated probabilities of
        the latest rows (for the score scale, tiers and MQL threshold).
    """
    levels = static_category_levels(rows, spec)
    matrix = encode_matrix(rows, spec.feature_names(), levels)
    clock = np.arange(len(y), dtype=np.float64) if order is None else np.asarray(order, dtype=np.float64)
    calibration, losses, _positions, p = cross_fit(fitted.candidate, fitted.best_iteration, matrix, y, clock, None, spec, levels, config)
    return calibration, losses, p


def cross_fit(
    candidate: Candidate,
    rounds: int,
    matrix: np.ndarray,
    y: np.ndarray,
    order: np.ndarray,
    groups: np.ndarray | None,
    spec: FeatureSpec,
    levels: dict[str, list[str]],
    config: TrainingConfig,
) -> tuple[Calibration, dict[str, float], np.ndarray, np.ndarray]:
    """The calibration of `candidate` refit on every row: the recipe cross-fitted on the latest blocks.

    Args:
        candidate: Family and settings.
        rounds: Trees of each fit (as many as early stopping chose; ignored by linear families).
        matrix: Model matrix of every row.
        y: Their outcomes.
        order: When each row came (recency weights and the latest blocks).
        groups: Per row, its lead: a lead's rows stay in one block (None: a lead a row).
        spec: Feature specification.
        levels: Category levels the matrix was encoded with.
        config: Training settings.

    Returns:
        The calibration map, its cross-fitted log losses, the positions of the latest rows and
        their calibrated out-of-block probabilities.
    """
    from training.crossfit import cross_fitted_raw, latest_blocks

    weights = recency_weights(len(y), candidate.half_life, order)

    def fit_on(mask: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        model, _ = _fit_family(candidate, matrix[mask], y[mask], None if weights is None else weights[mask],
                               spec, levels, config, None, rounds=rounds)  # fmt: skip
        return lambda where: np.asarray(model.predict(matrix[where], raw_score=True))

    positions, raw = cross_fitted_raw(fit_on, latest_blocks(order, groups))
    with threadpool_limits(limits=1, user_api="blas"):
        calibration, losses = fit_calibration(raw, y[positions], config.seed)
    return calibration, losses, positions, calibration.apply(raw)


def fit_rounds(
    candidate: Candidate,
    matrix: np.ndarray,
    y: np.ndarray,
    order: np.ndarray | None,
    spec: FeatureSpec,
    levels: dict[str, list[str]],
    config: TrainingConfig,
    rounds: int,
) -> lgb.Booster | LinearModel:
    """`candidate` fit on every row with `rounds` trees (linear families: no rounds), recency-weighted by `order`."""
    model, _ = _fit_family(candidate, matrix, y, recency_weights(len(y), candidate.half_life, order), spec, levels, config,
                           None, rounds=rounds)  # fmt: skip
    return model


def fit_stopped(
    candidate: Candidate,
    train: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    valid: tuple[np.ndarray, np.ndarray],
    spec: FeatureSpec,
    levels: dict[str, list[str]],
    config: TrainingConfig,
) -> tuple[lgb.Booster | LinearModel, int]:
    """`candidate` fit on `train` (matrix, y, order), stopped early on `valid` (LightGBM families).

    Returns:
        The model and its number of trees (0 for a linear family, which learns from `train` alone).
    """
    matrix, y, order = train
    weights = recency_weights(len(y), candidate.half_life, order)
    return _fit_family(candidate, matrix, y, weights, spec, levels, config, None if candidate.family.startswith("linear") else valid)


def _fit_family(
    candidate: Candidate,
    matrix: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray | None,
    spec: FeatureSpec,
    levels: dict[str, list[str]],
    config: TrainingConfig,
    valid: tuple[np.ndarray, np.ndarray] | None,
    rounds: int | None = None,
) -> tuple[lgb.Booster | LinearModel, int]:
    names = spec.feature_names()
    if candidate.family.startswith("linear"):
        with threadpool_limits(limits=1, user_api="blas"):
            return fit_linear(matrix, y, names, levels, slopes=candidate.family == "linear_slopes", c=candidate.c,
                              weights=weights, seed=config.seed), 0  # fmt: skip
    params = lightgbm_params(config, names)
    if params["num_threads"] == 0 and len(y) < ONE_THREAD_BELOW_ROWS:
        params["num_threads"] = 1
    if candidate.family == "lightgbm_linear_tree":
        params.update(linear_tree=True, linear_lambda=LINEAR_TREE_LAMBDA)
    categorical = [names.index(c) for c in spec.categorical_features()]
    train_set = lgb.Dataset(matrix, y, weight=weights, feature_name=names, categorical_feature=categorical, free_raw_data=False)
    settings = config.lightgbm
    if valid is None:
        booster = lgb.train(params, train_set, num_boost_round=max(1, rounds or settings.max_rounds))
        return lgb.Booster(model_str=booster.model_to_string()), booster.current_iteration()
    stopped = lgb.train(
        params,
        train_set,
        num_boost_round=settings.max_rounds,
        valid_sets=[lgb.Dataset(valid[0], valid[1], reference=train_set)],
        callbacks=[lgb.early_stopping(settings.early_stopping_rounds, verbose=False)],
    )
    best = stopped.best_iteration or stopped.current_iteration()
    return lgb.Booster(model_str=stopped.model_to_string(num_iteration=best)), best


def fit_linear(
    matrix: np.ndarray,
    y: np.ndarray,
    feature_names: list[str],
    levels: dict[str, list[str]],
    *,
    slopes: bool,
    c: float,
    weights: np.ndarray | None = None,
    seed: int = 0,
) -> LinearModel:
    """An L2-regularised logistic regression on the model matrix, as a `LinearModel`.

    Categories become one column per training level, numbers quantile bins (or a standardised
    slope with `slopes`) and a missing indicator when training had missing values.

    Args:
        matrix: The model matrix (`encode_matrix`).
        y: Outcomes (0/1).
        feature_names: Column names of the matrix.
        levels: Category column -> training levels (the matrix holds their codes).
        slopes: A slope per number instead of bins.
        c: Inverse L2 strength.
        weights: Per-row weights (recency), or None.
        seed: Solver seed.
    """
    blocks: list[np.ndarray] = []
    terms: list[LinearTerm] = []
    for j, name in enumerate(feature_names):
        column = matrix[:, j]
        known = ~np.isnan(column)
        if name in levels:
            term = LinearTerm(kind="category", weights=[0.0] * len(levels[name]))
            block = np.zeros((len(column), len(levels[name])))
            block[np.flatnonzero(known), column[known].astype(np.int64)] = 1.0
        elif slopes:
            x = column[known]
            log1p = bool(x.size and np.abs(x).max() > LOG_SPAN * (np.median(np.abs(x)) + 1.0))
            x = np.sign(x) * np.log1p(np.abs(x)) if log1p else x
            center, scale = (float(x.mean()), float(x.std()) or 1.0) if x.size else (0.0, 1.0)
            term = LinearTerm(kind="linear", center=center, scale=scale, log1p=log1p)
            block = np.zeros((len(column), 1))
            block[known, 0] = (x - center) / scale
        else:
            edges = np.unique(np.quantile(column[known], np.linspace(0, 1, N_BINS + 1)[1:-1])) if known.any() else np.array([])
            term = LinearTerm(kind="bins", edges=edges.tolist(), weights=[0.0] * (len(edges) + 1))
            block = np.zeros((len(column), len(edges) + 1))
            block[np.flatnonzero(known), np.searchsorted(edges, column[known], side="left")] = 1.0
        if name not in levels and not known.all():
            block = np.column_stack([block, (~known).astype(np.float64)])
        terms.append(term)
        blocks.append(block)
    design = np.column_stack(blocks) if blocks else np.zeros((len(y), 0))
    fit = LogisticRegression(C=c, max_iter=3000, random_state=seed).fit(design, y, sample_weight=weights)
    coef, at = fit.coef_[0], 0
    fitted_terms = []
    for term, block, j in zip(terms, blocks, range(len(terms)), strict=True):
        width = block.shape[1]
        w = coef[at : at + width].tolist()
        at += width
        has_missing_column = feature_names[j] not in levels and np.isnan(matrix[:, j]).any()
        update: dict[str, object] = {"missing": w.pop() if has_missing_column else 0.0}
        update.update({"slope": w[0]} if term.kind == "linear" else {"weights": w})
        fitted = term.model_copy(update=update)
        fitted_terms.append(fitted.model_copy(update={"reference": float(fitted.values(matrix[:, j]).mean())}))
    return LinearModel(
        feature_names=list(feature_names),
        intercept=float(fit.intercept_[0]),
        terms=fitted_terms,
        settings={"c": c, "form": "slopes" if slopes else "bins", "n_bins": None if slopes else N_BINS},
    )
