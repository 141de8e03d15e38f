"""Evaluation of any lead scorer (model, point grid, baseline) on the same test rows.

`scorer_metrics` gives ranking, calibration and sales-facing metrics with bootstrap 95 %
percentile intervals; `gains_curve`/`lift_curve` give the curves behind them for plots; and
`metrics_table` renders several scorers side by side in markdown.

Top-k metrics and curves rank leads by score descending with a *stable* sort: leads with equal
scores keep their input order, so the first of them in the input counts as ranked higher. This
makes ties deterministic (a point grid gives many equal scores); shuffle the rows beforehand if
ties should be broken at random instead. The top k of n leads is ``k = ceil(share * n)``.

The bootstrap draws every resample as a vector of row counts (how often each row, or each group's
rows, is drawn) and evaluates all metrics on the once-sorted rows weighted by those counts, which
is the same as evaluating the resampled rows and lets numpy do all resamples at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import pandas as pd

METRIC_NAMES: tuple[str, ...] = ("roc_auc", "pr_auc", "log_loss", "brier", "lift_top10", "capture_top20")
LIFT_TOP_SHARE = 0.10
CAPTURE_TOP_SHARE = 0.20
CONFIDENCE = 0.95

# Bootstrap resamples evaluated at once are capped so that a block holds about this many
# (resample, row) cells: ~8 MB per float64 array, whatever the number of rows.
_BLOCK_CELLS = 1_000_000


def scorer_metrics(
    y_true: npt.ArrayLike,
    probability: npt.ArrayLike,
    *,
    n_bootstrap: int = 200,
    seed: int = 0,
    groups: npt.ArrayLike | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics of one scorer with bootstrap 95 % percentile intervals.

    Metrics: ``roc_auc``; ``pr_auc`` (average precision, as scikit-learn computes it);
    ``log_loss`` and ``brier`` (probabilities clipped to [eps, 1 - eps] for the log, like
    scikit-learn); ``lift_top10`` (conversion rate in the top 10 % by score over the overall
    rate); ``capture_top20`` (share of all conversions that fall in the top 20 % by score).
    Ties in score are ranked in input order (see the module docstring).

    Resamples that lack one class cannot give ROC AUC, PR AUC, lift or capture; they are left
    out of those intervals (only possible with very few conversions or groups).

    Args:
        y_true: 1 for a converted lead, 0 otherwise, one per row.
        probability: Predicted conversion probability in [0, 1], one per row.
        n_bootstrap: Number of bootstrap resamples; 0 gives NaN interval bounds.
        seed: Seed of the resampling, so that a report can be reproduced.
        groups: Optional group per row (e.g. lead id): the bootstrap then draws whole groups,
            because the snapshots of one lead are correlated.

    Returns:
        ``{metric: {"value": v, "ci_low": lo, "ci_high": hi}}`` for the metrics above, in order.

    Raises:
        ValueError: The lengths differ, y_true is not 0/1 or holds one class only, a probability
            is NaN or outside [0, 1], groups has missing values, or n_bootstrap is negative.
    """
    y = _binary_labels(y_true, "y_true")
    p = _scores(probability, "probability", len(y))
    if len(y) == 0:
        raise ValueError("y_true is empty: there are no rows to evaluate")
    if not 0 < y.sum() < len(y):
        raise ValueError(
            f"y_true holds only class {int(y[0])} ({len(y)} rows): ranking metrics need both "
            "converted (1) and unconverted (0) leads"
        )
    if np.any((p < 0) | (p > 1)):
        bad = np.flatnonzero((p < 0) | (p > 1))
        raise ValueError(
            f"probability has {len(bad)} values outside [0, 1] "
            f"(e.g. {float(p[bad[0]])!r} at position {bad[0]}); metrics need probabilities"
        )
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be 0 or more, got {n_bootstrap}")
    # Without groups every row is its own group, so one code path serves both.
    group_codes = np.arange(len(y)) if groups is None else _group_codes(groups, len(y))

    order = np.argsort(-p, kind="stable")
    y_sorted, p_sorted = y[order], p[order]
    point = _metrics_from_weights(y_sorted, p_sorted, np.ones((1, len(y))))
    samples = _bootstrap_samples(
        y_sorted,
        p_sorted,
        n_bootstrap=n_bootstrap,
        rng=np.random.default_rng(seed),
        group_codes=group_codes[order],
    )
    tail = 100 * (1 - CONFIDENCE) / 2
    results: dict[str, dict[str, float]] = {}
    for name in METRIC_NAMES:
        valid = samples[name][~np.isnan(samples[name])]
        low, high = np.percentile(valid, [tail, 100 - tail]) if len(valid) else (np.nan, np.nan)
        results[name] = {"value": float(point[name][0]), "ci_low": float(low), "ci_high": float(high)}
    return results


def gains_curve(y_true: npt.ArrayLike, score: npt.ArrayLike) -> pd.DataFrame:
    """Cumulative gains: share of conversions reached when working leads from the top score down.

    Ties in score are ranked in input order (stable sort, see the module docstring).

    Args:
        y_true: 1 for a converted lead, 0 otherwise; at least one 1.
        score: Any real score (probability, grid points), higher meaning more likely to convert.

    Returns:
        Frame with n + 1 rows starting at (0, 0), columns ``share_of_leads`` (k / n after the
        top k leads) and ``share_of_conversions`` (conversions among them / all conversions).

    Raises:
        ValueError: Lengths differ, y_true is not 0/1 or has no conversion, a score is NaN.
    """
    y_sorted = _ranked_labels(y_true, score)
    n = len(y_sorted)
    reached = np.concatenate([[0.0], np.cumsum(y_sorted)])
    return pd.DataFrame(
        {"share_of_leads": np.arange(n + 1) / n, "share_of_conversions": reached / reached[-1]}
    )


def lift_curve(y_true: npt.ArrayLike, score: npt.ArrayLike) -> pd.DataFrame:
    """Cumulative lift: conversion rate in the top k leads by score over the overall rate.

    Ties in score are ranked in input order (stable sort, see the module docstring).

    Args:
        y_true: 1 for a converted lead, 0 otherwise; at least one 1.
        score: Any real score (probability, grid points), higher meaning more likely to convert.

    Returns:
        Frame with n rows (k = 1..n), columns ``share_of_leads`` (k / n) and ``lift``
        (conversion rate among the top k / overall conversion rate; 1 at k = n).

    Raises:
        ValueError: Lengths differ, y_true is not 0/1 or has no conversion, a score is NaN.
    """
    y_sorted = _ranked_labels(y_true, score)
    n = len(y_sorted)
    top_k = np.arange(1, n + 1)
    rate_in_top = np.cumsum(y_sorted) / top_k
    return pd.DataFrame({"share_of_leads": top_k / n, "lift": rate_in_top / y_sorted.mean()})


def metrics_table(results: Mapping[str, Mapping[str, Mapping[str, float]]], *, digits: int = 3) -> str:
    """A markdown table of several scorers' metrics, "value [ci_low, ci_high]" per cell.

    Args:
        results: ``{scorer: scorer_metrics(...)}``, e.g. ``{"model": ..., "grid": ...}``.
        digits: Decimals shown.

    Returns:
        Markdown with one row per scorer (in the given order) and one column per metric (in
        order of first appearance). A metric a scorer lacks, or a NaN value, shows as "n/a";
        NaN bounds leave the interval out.

    Raises:
        ValueError: `results` is empty or an entry lacks "value", "ci_low" or "ci_high".
    """
    if not results:
        raise ValueError("metrics_table needs at least one scorer; results is empty")
    columns = list(dict.fromkeys(metric for metrics in results.values() for metric in metrics))
    lines = [
        "| " + " | ".join(["scorer", *columns]) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for scorer, metrics in results.items():
        cells = [str(scorer).replace("|", "\\|")]
        for metric in columns:
            if metric not in metrics:
                cells.append("n/a")
                continue
            entry = metrics[metric]
            lacking = [key for key in ("value", "ci_low", "ci_high") if key not in entry]
            if lacking:
                raise ValueError(f"results[{scorer!r}][{metric!r}] lacks {', '.join(lacking)}")
            cells.append(_format_cell(entry["value"], entry["ci_low"], entry["ci_high"], digits))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _format_cell(value: float, low: float, high: float, digits: int) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isnan(low) or math.isnan(high):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _binary_labels(y_true: npt.ArrayLike, name: str) -> np.ndarray:
    """Labels as a float 0/1 vector, or a ValueError naming the offending values."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {y.shape}")
    if y.dtype == bool:
        return y.astype(float)
    if not np.issubdtype(y.dtype, np.number):
        raise ValueError(f"{name} must hold 0 and 1, got dtype {y.dtype} (e.g. {y[:3].tolist()})")
    y = y.astype(float)
    bad = ~np.isin(y, (0.0, 1.0))
    if bad.any():
        others = pd.unique(y[bad])[:5].tolist()
        raise ValueError(f"{name} must hold only 0 and 1; found {bad.sum()} other values (e.g. {others})")
    return y


def _scores(score: npt.ArrayLike, name: str, n_rows: int) -> np.ndarray:
    """Scores as a finite float vector as long as the labels, or a ValueError naming the problem."""
    s = np.asarray(score, dtype=float)
    if s.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {s.shape}")
    if len(s) != n_rows:
        raise ValueError(f"y_true has {n_rows} rows but {name} has {len(s)}")
    not_finite = np.flatnonzero(~np.isfinite(s))
    if len(not_finite):
        raise ValueError(
            f"{name} has {len(not_finite)} NaN or infinite values "
            f"(first at positions {', '.join(map(str, not_finite[:3]))})"
        )
    return s


def _group_codes(groups: npt.ArrayLike, n_rows: int) -> np.ndarray:
    """Integer code per row, numbered in order of first appearance."""
    values = np.asarray(groups)
    if values.ndim != 1:
        raise ValueError(f"groups must be one-dimensional, got shape {values.shape}")
    if len(values) != n_rows:
        raise ValueError(f"y_true has {n_rows} rows but groups has {len(values)}")
    codes, _ = pd.factorize(values)
    missing = np.flatnonzero(codes < 0)
    if len(missing):
        raise ValueError(
            f"groups has {len(missing)} missing values (first at positions "
            f"{', '.join(map(str, missing[:3]))}); every row needs a group"
        )
    return codes


def _ranked_labels(y_true: npt.ArrayLike, score: npt.ArrayLike) -> np.ndarray:
    """Labels ordered by score descending (stable), with at least one conversion."""
    y = _binary_labels(y_true, "y_true")
    s = _scores(score, "score", len(y))
    if not y.any():
        raise ValueError(f"y_true has no conversion among {len(y)} rows; gains and lift need one")
    return y[np.argsort(-s, kind="stable")]


def _top_count(share: float, total: np.ndarray) -> np.ndarray:
    """Leads in the top `share` of `total` leads: ceil(share * total), at least 1."""
    return np.maximum(1.0, np.ceil(share * total))


def _metrics_from_weights(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """All metrics of several weighted copies of the rows at once.

    Weight w on a row counts it w times, so integer weights from a bootstrap give the metrics
    of the resampled rows (sample_weight in scikit-learn has the same meaning).

    Args:
        y: 0/1 labels sorted by score descending (stable).
        p: Probabilities in the same order.
        weights: Shape (n_copies, n_rows), non-negative.

    Returns:
        Metric name -> array of n_copies values; NaN where a copy lacks a class.
    """
    n_rows = len(y)
    weighted_pos = weights * y
    cum_pos = np.cumsum(weighted_pos, axis=1)
    cum_all = np.cumsum(weights, axis=1)
    positives, total = cum_pos[:, -1], cum_all[:, -1]
    negatives = total - positives

    # Curves are read at the last row of each run of equal scores, so tied rows move together.
    run_ends = np.append(np.flatnonzero(np.diff(p)), n_rows - 1)
    zeros = np.zeros((len(weights), 1))
    tp = np.concatenate([zeros, cum_pos[:, run_ends]], axis=1)
    fp = np.concatenate([zeros, cum_all[:, run_ends]], axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        roc_auc = np.sum(np.diff(fp, axis=1) * (tp[:, 1:] + tp[:, :-1]), axis=1) / (2 * positives * negatives)
        # Before the first weighted row nothing is predicted (tp = 0): precision 0, not 0/0.
        precision = tp[:, 1:] / np.maximum(tp[:, 1:] + fp[:, 1:], np.finfo(float).tiny)
        pr_auc = np.sum(np.diff(tp, axis=1) * precision, axis=1) / positives

        eps = np.finfo(float).eps
        clipped = np.clip(p, eps, 1 - eps)
        row_log_loss = -(y * np.log(clipped) + (1 - y) * np.log1p(-clipped))
        log_loss = weights @ row_log_loss / total
        brier = weights @ (p - y) ** 2 / total

        top_lift = _top_count(LIFT_TOP_SHARE, total)
        lift = (_positives_in_top(y, cum_pos, cum_all, top_lift) / top_lift) / (positives / total)
        capture = _positives_in_top(y, cum_pos, cum_all, _top_count(CAPTURE_TOP_SHARE, total)) / positives
    return {
        "roc_auc": roc_auc,
        "pr_auc": pr_auc,
        "log_loss": log_loss,
        "brier": brier,
        "lift_top10": lift,
        "capture_top20": capture,
    }


def _positives_in_top(y: np.ndarray, cum_pos: np.ndarray, cum_all: np.ndarray, top: np.ndarray) -> np.ndarray:
    """Conversions among the first `top` weighted leads of each copy.

    The row where the cumulative weight reaches `top` is counted only for the part of its weight
    that fits, which is what ranking its repeated copies one after the other gives.
    """
    copies = np.arange(len(cum_all))
    boundary = np.sum(cum_all < top[:, None], axis=1)  # first row whose cumulative weight >= top
    before = boundary - 1
    pos_before = np.where(before >= 0, cum_pos[copies, np.maximum(before, 0)], 0.0)
    all_before = np.where(before >= 0, cum_all[copies, np.maximum(before, 0)], 0.0)
    return pos_before + (top - all_before) * y[boundary]


def _bootstrap_samples(
    y: np.ndarray,
    p: np.ndarray,
    *,
    n_bootstrap: int,
    rng: np.random.Generator,
    group_codes: np.ndarray,
) -> dict[str, np.ndarray]:
    """Metric values of `n_bootstrap` resamples of whole groups, evaluated in blocks.

    Args:
        y: Labels sorted by score descending.
        p: Probabilities in the same order.
        n_bootstrap: Number of resamples.
        rng: Source of the draws.
        group_codes: Group code (0..n_groups-1, numbered in input order) of each sorted row.

    Returns:
        Metric name -> array of n_bootstrap values.
    """
    n_groups = int(group_codes.max()) + 1
    block = max(1, _BLOCK_CELLS // len(y))
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, n_bootstrap, block):
        size = min(block, n_bootstrap - start)
        # Drawing n_groups groups with replacement = how many times each group was drawn; a
        # row then weighs as much as its group's count.
        draws = rng.integers(0, n_groups, size=(size, n_groups)) + n_groups * np.arange(size)[:, None]
        counts = np.bincount(draws.ravel(), minlength=size * n_groups).reshape(size, n_groups)
        parts.append(_metrics_from_weights(y, p, counts[:, group_codes].astype(float)))
    return {
        name: np.concatenate([part[name] for part in parts]) if parts else np.empty(0)
        for name in METRIC_NAMES
    }
