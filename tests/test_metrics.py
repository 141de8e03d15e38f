"""Code tests of scorer metrics: agreement with scikit-learn, top-k by hand, the bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from training.metrics import (
    METRIC_NAMES,
    _metrics_from_weights,
    gains_curve,
    lift_curve,
    metrics_table,
    scorer_metrics,
)


def synthetic(n: int, seed: int, decimals: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from the probabilities (so they carry signal); rounding makes ties."""
    rng = np.random.default_rng(seed)
    p = rng.beta(1, 4, n)
    if decimals is not None:
        p = np.round(p, decimals)
    y = (rng.random(n) < p).astype(int)
    return y, p


# --- point estimates ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "seed", "decimals"),
    [(500, 0, None), (500, 1, 1), (60, 2, 2), (2_000, 3, 0)],
    ids=["distinct", "many-ties", "small", "two-values"],
)
def test_point_estimates_match_sklearn(n: int, seed: int, decimals: int | None) -> None:
    y, p = synthetic(n, seed, decimals)
    result = scorer_metrics(y, p, n_bootstrap=0)
    assert result["roc_auc"]["value"] == pytest.approx(skm.roc_auc_score(y, p), rel=1e-12)
    assert result["pr_auc"]["value"] == pytest.approx(skm.average_precision_score(y, p), rel=1e-12)
    assert result["log_loss"]["value"] == pytest.approx(skm.log_loss(y, p), rel=1e-12)
    assert result["brier"]["value"] == pytest.approx(skm.brier_score_loss(y, p), rel=1e-12)


def test_extreme_probabilities_are_clipped_like_sklearn() -> None:
    y = np.array([1, 0, 1, 0])
    p = np.array([0.0, 1.0, 1.0, 0.0])
    result = scorer_metrics(y, p, n_bootstrap=0)
    assert result["log_loss"]["value"] == pytest.approx(skm.log_loss(y, p), rel=1e-12)


@pytest.mark.parametrize(
    ("y_by_rank", "lift_top10", "capture_top20"),
    [
        # n = 10: top 10 % is 1 lead, top 20 % is 2 leads; 3 conversions overall (rate 0.3).
        ([1, 0, 1, 0, 0, 0, 0, 0, 0, 1], 1 / 0.3, 1 / 3),
        ([1, 1, 0, 0, 0, 0, 0, 0, 0, 1], 1 / 0.3, 2 / 3),
        ([0, 1, 0, 0, 0, 0, 0, 0, 1, 1], 0.0, 1 / 3),
        ([0, 0, 0, 0, 0, 0, 0, 1, 1, 1], 0.0, 0.0),
        # n = 30: top 10 % is 3 leads, top 20 % is 6.
        ([1, 1, 1, 0, 0, 0] + [0] * 18 + [1] * 6, (3 / 3) / (9 / 30), 3 / 9),
        # n = 15: top 10 % is ceil(1.5) = 2 leads, top 20 % is 3.
        ([1, 0, 0, 1] + [0] * 9 + [1, 0], (1 / 2) / (3 / 15), 1 / 3),
    ],
)
def test_lift_and_capture_by_hand(y_by_rank: list[int], lift_top10: float, capture_top20: float) -> None:
    n = len(y_by_rank)
    score = np.linspace(0.99, 0.01, n)  # already ranked: the first lead has the highest score
    result = scorer_metrics(np.array(y_by_rank), score, n_bootstrap=0)
    assert result["lift_top10"]["value"] == pytest.approx(lift_top10)
    assert result["capture_top20"]["value"] == pytest.approx(capture_top20)


def test_ties_are_ranked_in_input_order() -> None:
    score = np.full(10, 0.5)
    converted_first = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    converted_second = np.array([0, 1, 0, 0, 0, 0, 0, 0, 0, 1])
    assert scorer_metrics(converted_first, score, n_bootstrap=0)["lift_top10"]["value"] == pytest.approx(5.0)
    assert scorer_metrics(converted_second, score, n_bootstrap=0)["lift_top10"]["value"] == 0.0
    # A tie is still a tie for the ranking metrics: all-equal scores rank at chance.
    assert scorer_metrics(converted_first, score, n_bootstrap=0)["roc_auc"]["value"] == 0.5


def test_result_shape_and_order() -> None:
    y, p = synthetic(200, 4)
    result = scorer_metrics(y, p, n_bootstrap=20)
    assert tuple(result) == METRIC_NAMES
    assert all(set(entry) == {"value", "ci_low", "ci_high"} for entry in result.values())
    assert all(type(v) is float for entry in result.values() for v in entry.values())


# --- bootstrap ----------------------------------------------------------------------------------


def test_weighted_core_equals_metrics_of_resampled_rows() -> None:
    """Counts as weights must give what evaluating the repeated rows gives."""
    y, p = synthetic(300, 5, decimals=2)
    order = np.argsort(-p, kind="stable")
    y, p = y[order].astype(float), p[order]
    counts = np.random.default_rng(6).poisson(1.5, size=(20, len(y))).astype(float)
    core = _metrics_from_weights(y, p, counts)
    for copy, weight in enumerate(counts):
        y_rep, p_rep = np.repeat(y, weight.astype(int)), np.repeat(p, weight.astype(int))
        top10, top20 = math.ceil(0.1 * len(y_rep)), math.ceil(0.2 * len(y_rep))
        ranked = y_rep[np.argsort(-p_rep, kind="stable")]
        expected = {
            "roc_auc": skm.roc_auc_score(y_rep, p_rep),
            "pr_auc": skm.average_precision_score(y_rep, p_rep),
            "log_loss": skm.log_loss(y_rep, p_rep),
            "brier": skm.brier_score_loss(y_rep, p_rep),
            "lift_top10": ranked[:top10].mean() / y_rep.mean(),
            "capture_top20": ranked[:top20].sum() / y_rep.sum(),
        }
        for name, value in expected.items():
            assert core[name][copy] == pytest.approx(value, rel=1e-9), name


def test_weighted_top_k_counts_part_of_the_boundary_row() -> None:
    # Ranked rows with bootstrap counts 3, 2, 1, 1, 3: ten leads, six conversions. The top 10 %
    # (1 lead) and top 20 % (2 leads) both fall inside the first row's three copies.
    y = np.array([1.0, 0.0, 0.0, 0.0, 1.0])
    p = np.array([0.9, 0.7, 0.5, 0.3, 0.1])
    core = _metrics_from_weights(y, p, np.array([[3.0, 2.0, 1.0, 1.0, 3.0]]))
    assert core["lift_top10"][0] == pytest.approx((1 / 1) / (6 / 10))
    assert core["capture_top20"][0] == pytest.approx(2 / 6)


def test_interval_contains_point_estimate() -> None:
    y, p = synthetic(1_000, 7)
    result = scorer_metrics(y, p, n_bootstrap=200, seed=3)
    for name, entry in result.items():
        assert entry["ci_low"] < entry["value"] < entry["ci_high"], name


def test_interval_narrows_with_more_rows() -> None:
    small = scorer_metrics(*synthetic(300, 8), n_bootstrap=100)
    large = scorer_metrics(*synthetic(5_000, 8), n_bootstrap=100)
    for name in METRIC_NAMES:
        width_small = small[name]["ci_high"] - small[name]["ci_low"]
        width_large = large[name]["ci_high"] - large[name]["ci_low"]
        assert width_large < width_small, name


def test_seed_reproduces_and_changes_the_interval() -> None:
    y, p = synthetic(400, 9)
    first = scorer_metrics(y, p, n_bootstrap=50, seed=1)
    assert scorer_metrics(y, p, n_bootstrap=50, seed=1) == first
    other = scorer_metrics(y, p, n_bootstrap=50, seed=2)
    assert other["roc_auc"]["value"] == first["roc_auc"]["value"]
    assert other["roc_auc"]["ci_low"] != first["roc_auc"]["ci_low"]


def test_no_bootstrap_gives_nan_bounds() -> None:
    y, p = synthetic(100, 10)
    result = scorer_metrics(y, p, n_bootstrap=0)
    assert all(math.isnan(entry["ci_low"]) and math.isnan(entry["ci_high"]) for entry in result.values())
    assert not any(math.isnan(entry["value"]) for entry in result.values())


def test_one_group_per_row_is_the_row_bootstrap() -> None:
    y, p = synthetic(500, 11)
    by_row = scorer_metrics(y, p, n_bootstrap=40, seed=5)
    by_group = scorer_metrics(y, p, n_bootstrap=40, seed=5, groups=[f"L-{i:04d}" for i in range(len(y))])
    assert by_group == by_row


def test_group_bootstrap_draws_whole_leads() -> None:
    """Each lead seen as 8 identical snapshots: drawing leads must equal drawing the unique rows."""
    y, p = synthetic(150, 12)
    copies = 8
    y_snap, p_snap = np.repeat(y, copies), np.repeat(p, copies)
    lead_id = np.repeat(np.arange(len(y)), copies)

    leads = scorer_metrics(y, p, n_bootstrap=60, seed=2)
    by_lead = scorer_metrics(y_snap, p_snap, n_bootstrap=60, seed=2, groups=lead_id)
    by_snapshot = scorer_metrics(y_snap, p_snap, n_bootstrap=60, seed=2)
    for name in ("roc_auc", "pr_auc", "log_loss", "brier"):
        assert by_lead[name]["ci_low"] == pytest.approx(leads[name]["ci_low"], rel=1e-9), name
        assert by_lead[name]["ci_high"] == pytest.approx(leads[name]["ci_high"], rel=1e-9), name
        # Treating correlated snapshots as independent would claim a much narrower interval.
        width_lead = by_lead[name]["ci_high"] - by_lead[name]["ci_low"]
        width_snapshot = by_snapshot[name]["ci_high"] - by_snapshot[name]["ci_low"]
        assert width_snapshot < 0.6 * width_lead, name


# --- input errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("y", "p", "kwargs", "message"),
    [
        ([1, 1, 1], [0.2, 0.5, 0.9], {}, r"y_true holds only class 1 \(3 rows\)"),
        ([0, 0], [0.2, 0.5], {}, r"y_true holds only class 0 \(2 rows\)"),
        ([], [], {}, r"y_true is empty"),
        ([0, 1, 0], [0.2, 0.5], {}, r"y_true has 3 rows but probability has 2"),
        ([0, 1, 0], [0.2, float("nan"), 0.1], {}, r"probability has 1 NaN or infinite values \(first at positions 1\)"),
        ([0, 1, 0], [0.2, 1.2, -0.1], {}, r"probability has 2 values outside \[0, 1\] \(e.g. 1.2 at position 1\)"),
        ([0, 2, 1], [0.2, 0.5, 0.1], {}, r"y_true must hold only 0 and 1; found 1 other values \(e.g. \[2.0\]\)"),
        (["no", "yes"], [0.2, 0.5], {}, r"y_true must hold 0 and 1, got dtype"),
        ([0, 1, 0], [0.2, 0.5, 0.1], {"groups": [1, 2]}, r"y_true has 3 rows but groups has 2"),
        ([0, 1, 0], [0.2, 0.5, 0.1], {"groups": ["a", None, "b"]}, r"groups has 1 missing values \(first at positions 1\)"),
        ([0, 1, 0], [0.2, 0.5, 0.1], {"n_bootstrap": -1}, r"n_bootstrap must be 0 or more, got -1"),
    ],
)
def test_invalid_input_is_named(y: list, p: list, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        scorer_metrics(y, p, **kwargs)


# --- curves and table ---------------------------------------------------------------------------


def test_gains_curve_by_hand() -> None:
    curve = gains_curve([0, 1, 1, 0], [0.1, 0.9, 0.8, 0.2])
    assert list(curve.columns) == ["share_of_leads", "share_of_conversions"]
    assert curve["share_of_leads"].tolist() == [0, 0.25, 0.5, 0.75, 1]
    assert curve["share_of_conversions"].tolist() == [0, 0.5, 1, 1, 1]


def test_lift_curve_by_hand() -> None:
    curve = lift_curve([0, 1, 1, 0], [0.1, 0.9, 0.8, 0.2])
    assert list(curve.columns) == ["share_of_leads", "lift"]
    assert curve["share_of_leads"].tolist() == [0.25, 0.5, 0.75, 1]
    assert curve["lift"].tolist() == pytest.approx([2, 2, 4 / 3, 1])


def test_curves_accept_points_and_agree_with_metrics() -> None:
    y, p = synthetic(1_000, 14, decimals=1)
    points = np.round(p * 100)  # grid points: any real score, ties included
    gains = gains_curve(y, points)
    lift = lift_curve(y, points)
    result = scorer_metrics(y, points / 100, n_bootstrap=0)
    assert gains["share_of_conversions"].iloc[200] == pytest.approx(result["capture_top20"]["value"])
    assert lift["lift"].iloc[99] == pytest.approx(result["lift_top10"]["value"])


def test_curve_needs_a_conversion() -> None:
    with pytest.raises(ValueError, match="y_true has no conversion among 3 rows"):
        gains_curve([0, 0, 0], [0.1, 0.2, 0.3])


def test_metrics_table_renders_markdown() -> None:
    results = {
        "model": {
            "roc_auc": {"value": 0.8123, "ci_low": 0.8011, "ci_high": 0.8244},
            "lift_top10": {"value": 3.5, "ci_low": 3.1, "ci_high": 3.9},
        },
        "point|grid": {"roc_auc": {"value": 0.7, "ci_low": float("nan"), "ci_high": float("nan")}},
    }
    assert metrics_table(results) == (
        "| scorer | roc_auc | lift_top10 |\n"
        "|---|---:|---:|\n"
        "| model | 0.812 [0.801, 0.824] | 3.500 [3.100, 3.900] |\n"
        "| point\\|grid | 0.700 | n/a |\n"
    )


def test_metrics_table_takes_scorer_metrics_output() -> None:
    y, p = synthetic(300, 15)
    table = metrics_table(
        {
            "model": scorer_metrics(y, p, n_bootstrap=20),
            "random": scorer_metrics(y, np.full(300, 0.2), n_bootstrap=20),
        }
    )
    lines = table.splitlines()
    assert lines[0] == "| scorer | " + " | ".join(METRIC_NAMES) + " |"
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| model", "| random"]
    assert pd.Series(lines[2:]).str.count(r"\[").tolist() == [6, 6]


@pytest.mark.parametrize(
    ("results", "message"),
    [
        ({}, "results is empty"),
        ({"model": {"roc_auc": {"value": 0.8}}}, r"results\['model'\]\['roc_auc'\] lacks ci_low, ci_high"),
    ],
)
def test_metrics_table_rejects_bad_results(results: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        metrics_table(results)
