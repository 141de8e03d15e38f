"""Candidates chosen on time: the linear model's bundle, exact reasons, extrapolation, the served refit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from features.contract import validate_static
from features.engine import lead_attribute_rows
from features.grid import PointGrid
from features.spec import FeatureSpec
from model.bundle import LINEAR_FILE, MODEL_FILE, ScoringModel
from training.config import TrainingConfig
from training.selection import rolling_origin_folds, run_chosen_static_training
from training.selection_config import SelectionConfig
from training.static import evaluation_plan

SPEC = FeatureSpec(categorical=["source"], numeric=["minutes", "visits"], email_column=None, interactions=False)
GRID = PointGrid.model_validate(
    {"name": "g", "mql_threshold": 10, "rules": [{"label": "Referral", "points": 20, "feature": "source", "in": ["Referral"]}]}
)


def _ordered(frame: pd.DataFrame):
    frame = frame.copy()
    frame["order"] = np.arange(len(frame), dtype=float)
    return validate_static(frame, SPEC, None)


def _train(data, families: list[str], config: TrainingConfig | None = None):
    config = config or TrainingConfig(n_bootstrap=20)
    selection = SelectionConfig(families=families, half_lives=[None])  # type: ignore[arg-type]
    return run_chosen_static_training(data, SPEC, config, GRID, evaluation_plan(data, config), selection)


@pytest.mark.parametrize(("n", "k", "fraction", "min_rows", "n_folds", "block"), [
    (1000, 3, 0.125, 0, 3, 125), (80, 3, 0.125, 0, 3, 10), (1000, 1, 0.2, 0, 1, 200),
    (720, 3, 0.125, 100, 3, 100),  # a block of at least min_rows
    (450, 3, 0.125, 100, 2, 100),  # the oldest fold would fit on fewer than 2 x min_rows
])  # fmt: skip
def test_rolling_origin_folds_look_only_forward(n: int, k: int, fraction: float, min_rows: int, n_folds: int, block: int) -> None:
    folds = rolling_origin_folds(n, k, fraction, min_rows)
    assert len(folds) == n_folds
    for fit, valid in folds:
        assert fit.max() < valid.min() and fit.min() == 0  # expanding window, validation after it
        assert len(valid) == block and len(fit) >= 2 * min_rows
    assert folds[-1][1].max() == n - 1


def test_a_linear_bundle_round_trips_without_pickle_and_explains_exactly(static_export, tmp_path: Path) -> None:
    export = static_export(900, 5).drop(columns=["status"])
    data = _ordered(export)
    result, selection = _train(data, ["linear_bins", "linear_slopes"])
    model = result.model
    assert selection is not None and model.meta.model_family == "linear"
    saved = model.save(tmp_path / "bundle")
    assert sorted(p.name for p in saved.iterdir()) == sorted(["bundle.json", LINEAR_FILE])
    assert not (saved / MODEL_FILE).exists()
    loaded = ScoringModel.load(saved)
    # An unseen category and a missing number at scoring time.
    new = export.head(50).copy()
    new.loc[new.index[:5], "source"] = "Trade fair"
    new.loc[new.index[5:10], "minutes"] = np.nan
    rows = lead_attribute_rows(new.reset_index(drop=True), SPEC)
    matrix = loaded.encode(rows)
    assert_allclose(loaded.probability(matrix), model.probability(model.encode(rows)))
    assert loaded.meta.categorical_levels == model.meta.categorical_levels
    assert np.isfinite(loaded.probability(matrix)).all()
    contributions = loaded.contributions(matrix)
    # Exact reasons: features plus base value add up to the raw log-odds.
    assert_allclose(contributions.sum(axis=1), loaded.raw(matrix), atol=1e-9)
    up, down = loaded.reasons(contributions[0], rows.row(0))
    assert up or down
    assert loaded.compiled_forest(10_000) is None


def test_the_selector_picks_a_model_that_extrapolates() -> None:
    """A linear signal in a number that keeps growing: the test period lies beyond the training range."""
    rng = np.random.default_rng(0)
    n = 4000
    t = np.arange(n) / n
    minutes = rng.uniform(0, 10, n) + 40 * t  # each period lies past every earlier one
    visits = rng.poisson(2, n).astype(float)
    logit = -4.0 + 0.12 * minutes
    frame = pd.DataFrame({
        "lead_id": [f"L{i}" for i in range(n)], "converted": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int),
        "source": rng.choice(["Google", "Referral"], n), "minutes": minutes.round(2), "visits": visits,
    })  # fmt: skip
    data = _ordered(frame)
    config = TrainingConfig(n_bootstrap=20)
    chosen, selection = _train(data, ["lightgbm", "linear_bins", "linear_slopes", "lightgbm_linear_tree"], config)
    assert selection is not None
    assert selection.chosen.family in {"linear_slopes", "lightgbm_linear_tree"}, selection.lines()
    trees, _ = _train(data, ["lightgbm"], config)
    assert chosen.metrics["model"]["roc_auc"]["value"] > trees.metrics["model"]["roc_auc"]["value"] + 0.01


def test_the_served_static_model_learned_from_every_row(static_export) -> None:
    data = _ordered(static_export(900, 6).drop(columns=["status"]))
    result, _ = _train(data, ["lightgbm"])
    training = result.model.meta.training
    test = result.plan.splits[0][1]
    assert training["served"]["trained_through_order"] == data.leads["order"].max()
    assert training["served"]["n_leads"] == len(data.leads)
    assert training["measured_on"] == {
        "order_from": float(test.min()), "order_to": float(test.max()), "n_leads": len(test), "order_name": "order",
    }  # fmt: skip
    assert training["measured_model_version"] != result.model.meta.model_version
    # The metrics are the measured model's, on rows it never saw.
    assert result.metrics["model"]["roc_auc"]["value"] == pytest.approx(result.fold_auc["model"][0])
    assert training["selection"]["chosen"] == "lightgbm (all rows alike)"


def test_the_served_timed_model_is_trained_through_the_matured_label_cutoff(training_result, simulated_dataset) -> None:
    from features.snapshots import matured_label_cutoff
    from training.config import ProjectConfig
    from training.refit import refit_on_matured

    config = ProjectConfig()
    served = refit_on_matured(training_result, simulated_dataset, config.features, config.training)
    expected = simulated_dataset.data_end - pd.Timedelta(days=config.training.horizon_days)
    assert pd.Timestamp(served.meta.training["served"]["trained_through"]) == expected == matured_label_cutoff(
        simulated_dataset.data_end, config.training.horizon_days
    )
    n_matured = served.meta.training["served"]["n_snapshots"]
    assert n_matured > sum(training_result.split["n_snapshots"].values())  # the boundary snapshots too
    assert served.booster.current_iteration() == training_result.model.booster.current_iteration()
    assert served.meta.training["measured_on"]["created_from"] >= training_result.split["test_start"]


def test_the_service_scoring_path_scores_and_explains_a_linear_bundle(static_export, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from model.scoring import LeadIn, score_lead

    data = _ordered(static_export(900, 7).drop(columns=["status"]))
    result, _ = _train(data, ["linear_slopes"])
    model = ScoringModel.load(result.model.save(tmp_path / "bundle"))
    lead = LeadIn(lead_id="L-1", created_at=datetime(2025, 1, 2, tzinfo=UTC),
                  attributes={"source": "Referral", "minutes": 25.0, "visits": 4})  # fmt: skip
    out = score_lead(model, lead, datetime(2025, 1, 3, tzinfo=UTC), with_reasons=True)
    assert 0.0 < out.probability < 1.0 and out.model_version == model.meta.model_version
    rows = lead_attribute_rows(pd.DataFrame([{"source": "Referral", "minutes": 25.0, "visits": 4.0}]), SPEC)
    assert out.probability == pytest.approx(float(model.probability(model.encode(rows))[0]), abs=1e-4)
    assert out.reasons is not None and out.reasons["up"]  # a referral with a long visit: reasons up


def test_the_drift_guard_names_the_feature_that_moved_and_its_range() -> None:
    from features.engine import FeatureRows
    from training.drift import drift_report

    rng = np.random.default_rng(3)

    def rows(n: int, low: float, high: float) -> FeatureRows:
        return FeatureRows(
            categorical={"source": rng.choice(np.array(["Google", "Referral"], dtype=object), n)},
            numeric={"minutes": rng.uniform(low, high, n), "visits": rng.poisson(2, n).astype(float)},
        )

    report = drift_report(rows(1500, 0, 10), rows(500, 5, 20), SPEC)
    assert report.adversarial_auc > 0.8
    assert report.shifted[0][0] == "minutes"
    assert report.out_of_range["minutes"] == pytest.approx(2 / 3, abs=0.06)
    assert "visits" not in report.out_of_range or report.out_of_range["visits"] < 0.05
    steady = drift_report(rows(1500, 0, 10), rows(500, 0, 10), SPEC)
    assert steady.adversarial_auc < 0.6 and "little shift" in steady.lines()[0]


def test_the_report_of_a_served_bundle_uses_only_leads_it_never_saw(training_result, simulated_dataset) -> None:
    from training.config import ProjectConfig
    from training.refit import refit_on_matured
    from training.report import inputs_from_dataset

    config = ProjectConfig()
    served = refit_on_matured(training_result, simulated_dataset, config.features, config.training)
    # Every matured label of this data was learned from: there is no test period left on it.
    with pytest.raises(ValueError, match="which the model never saw"):
        inputs_from_dataset(served, simulated_dataset, config.training.snapshot_offsets_days)
    measured = inputs_from_dataset(training_result.model, simulated_dataset, config.training.snapshot_offsets_days)
    assert measured.test_start == training_result.split["test_start"] and measured.served_through is None


@pytest.mark.parametrize(("folds", "chosen", "kept"), [
    ([[0.80, 0.82, 0.84], [0.81, 0.83, 0.85]], 1, False),  # ahead on every fold by 0.01: chosen
    ([[0.80, 0.82, 0.84], [0.83, 0.80, 0.85]], 0, True),   # ahead on the mean, not clearly: the first stays
    ([[0.80, 0.82, 0.84], [0.79, 0.81, 0.83]], 0, False),  # behind: the first is the best
])  # fmt: skip
def test_one_standard_error_rule_keeps_the_first_unless_clearly_beaten(folds, chosen, kept) -> None:
    from training.selection import one_standard_error_choice

    table = [{"fold_roc_auc": f, "mean_roc_auc": float(np.mean(f))} for f in folds]
    position, note = one_standard_error_choice(table, ["lightgbm", "linear_bins"])
    assert position == chosen
    assert bool(note) == kept


def test_timed_selection_fits_each_fold_only_on_labels_closed_before_it() -> None:
    """Snapshots whose label window runs into a fold's validation period are not fit on."""
    from training.selection import select_candidate

    rng = np.random.default_rng(3)
    n = 3000
    order = np.arange(n, dtype=float)
    x = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(x - 1.5)))).astype(np.int8)
    rows = lead_attribute_rows(pd.DataFrame({"source": rng.choice(["a", "b"], n), "minutes": x, "visits": x * 0}), SPEC)
    selection = SelectionConfig(families=["lightgbm", "linear_slopes"], half_lives=[None])  # type: ignore[list-item]
    config = TrainingConfig()
    free = select_candidate(rows, y, order, SPEC, config, selection)
    horizon = 200.0
    closed = select_candidate(rows, y, order, SPEC, config, selection, matured_at=order + horizon)
    assert len(free.folds) == len(closed.folds) == 3
    for a, b in zip(free.folds, closed.folds, strict=True):
        # A row at order t closes at t + horizon: the last `horizon` - 1 rows before each fold go.
        assert b["fit_rows"] == a["fit_rows"] - horizon + 1
