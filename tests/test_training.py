"""Training: time split, model behaviour, bundle round trip, MLflow registry, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.engine import FeatureRows, snapshot_features
from leadscore.cli import app
from model.bundle import ScoringModel
from model.registry import RegistryConfig
from training.config import ProjectConfig

SCORER_METRICS = {"roc_auc", "pr_auc", "log_loss", "brier", "lift_top10", "capture_top20"}


def test_split_is_by_time_and_leads_never_straddle(training_result) -> None:
    r = training_result
    train, valid, test = (f.snapshots for f in (r.train, r.valid, r.test))
    assert not set(train["lead_id"]) & set(test["lead_id"])
    assert not set(valid["lead_id"]) & set(test["lead_id"])
    assert not set(train["lead_id"]) & set(valid["lead_id"])
    horizon = pd.Timedelta(days=r.model.meta.horizon_days)
    valid_start = pd.Timestamp(r.split["valid_start"])
    # Matured labels: every training label window closed before the validation period began.
    assert (train["as_of"] + horizon <= valid_start).all()
    data_end = pd.Timestamp(r.split["data_end"])
    assert (test["as_of"] + horizon <= data_end).all()


def test_model_beats_grid_by_a_clear_margin(training_result) -> None:
    m = training_result.metrics
    assert set(m) == {"model", "point_grid", "logistic_regression", "oracle"}
    for scorer in m.values():
        assert set(scorer) == SCORER_METRICS
    assert m["model"]["roc_auc"]["value"] >= m["point_grid"]["roc_auc"]["value"] + 0.05
    assert m["model"]["capture_top20"]["value"] > m["point_grid"]["capture_top20"]["value"]
    # The oracle is the ceiling: the model cannot beat the simulator's own truth by much.
    assert m["model"]["roc_auc"]["value"] <= m["oracle"]["roc_auc"]["value"] + 0.01


def test_calibrated_probabilities_match_observed_rate(training_result) -> None:
    test = training_result.test
    p = test.scores["model"]
    assert 0.7 < p.mean() / test.y.mean() < 1.3


def _with_engagement(rows: FeatureRows, feature: str, value: float) -> FeatureRows:
    numeric = dict(rows.numeric)
    numeric[feature] = np.full_like(numeric[feature], value)
    return FeatureRows(rows.categorical, numeric)


def test_a_recent_demo_request_never_lowers_the_score_on_average(training_result) -> None:
    model, rows = training_result.model, training_result.test.rows
    base = model.probability(model.encode(rows))
    requested = rows
    for name, value in (("n_demo_request_7d", 1), ("n_demo_request_30d", 1), ("n_demo_request_90d", 1), ("n_demo_request_total", 1), ("days_since_demo_request", 1.0)):
        requested = _with_engagement(requested, name, value)
    after = model.probability(model.encode(requested))
    never = rows.numeric["n_demo_request_total"] == 0
    assert after[never].mean() > base[never].mean()


def test_bundle_round_trip_with_unseen_category(training_result, tmp_path: Path) -> None:
    model = training_result.model
    model.save(tmp_path / "b")
    loaded = ScoringModel.load(tmp_path / "b")
    rows = training_result.test.rows
    categorical = dict(rows.categorical)
    categorical["industry"] = categorical["industry"].copy()
    categorical["industry"][:5] = "space_mining"  # never seen at fit time
    rows = FeatureRows(categorical, rows.numeric)
    np.testing.assert_allclose(loaded.probability(loaded.encode(rows)), model.probability(model.encode(rows)))
    assert loaded.meta.categorical_levels == model.meta.categorical_levels
    assert np.isnan(loaded.encode(rows)[:5, loaded.feature_names.index("industry")]).all()
    # No pickle anywhere in the bundle: a text model and JSON.
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["bundle.json", "model.txt"]


def test_bundle_load_names_the_missing_file(tmp_path: Path) -> None:
    (tmp_path / "bundle.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.txt is missing"):
        ScoringModel.load(tmp_path)


def test_contributions_sum_to_raw_score(training_result) -> None:
    model, matrix = training_result.model, training_result.test.matrix[:200]
    contrib = model.contributions(matrix)
    np.testing.assert_allclose(contrib.sum(axis=1), model.raw(matrix), rtol=1e-6, atol=1e-6)


def test_mlflow_registers_and_champion_moves_only_on_improvement(training_result, simulated_dataset, tmp_path: Path) -> None:
    from mlflow import MlflowClient

    from training.tracking import log_training_run

    registry = RegistryConfig(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_location=str(tmp_path / "artifacts"))
    config = ProjectConfig(registry=registry)
    first = log_training_run(training_result, simulated_dataset, config)
    assert first.promoted and first.model_version == "1"
    # The same model again does not beat itself: the alias stays on version 1.
    second = log_training_run(training_result, simulated_dataset, config)
    assert not second.promoted
    assert second.champion_auc_same_test == pytest.approx(training_result.metrics["model"]["roc_auc"]["value"])
    client = MlflowClient(tracking_uri=registry.tracking_uri)
    assert str(client.get_model_version_by_alias("leadscore", "champion").version) == "1"
    run = client.get_run(first.run_id)
    assert run.data.metrics["model.roc_auc"] == pytest.approx(training_result.metrics["model"]["roc_auc"]["value"])
    assert "point_grid.roc_auc" in run.data.metrics
    assert run.data.params["data.content_hash"]
    artifacts = {a.path for a in client.list_artifacts(first.run_id)}
    assert {"bundle", "plots", "metrics.json"} <= artifacts


def test_cli_simulate_train_score(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["simulate", "--leads", "1500", "--seed", "3", "--out", "sim"])
    assert result.exit_code == 0, result.output
    grid = "default"  # the built-in grid
    result = runner.invoke(
        app,
        ["train", "--data", "sim", "--grid", str(grid), "--metrics-out", "m.json", "--bundle-out", "bundle", "--no-mlflow"],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(Path("m.json").read_text())
    assert set(metrics) == {"model", "point_grid", "logistic_regression", "oracle"}
    assert set(metrics["model"]["roc_auc"]) == {"value", "ci_low", "ci_high"}
    assert "| model |" in result.output

    leads = pd.read_csv("sim/leads.csv", dtype=str, keep_default_na=False).head(3)
    lines = [
        json.dumps({"lead_id": r.lead_id, "created_at": r.created_at, "attributes": {"industry": r.industry}})
        for r in leads.itertuples()
    ]
    lines.insert(1, json.dumps({"lead_id": "bad", "created_at": "yesterday"}))
    Path("in.jsonl").write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["score", "-i", "in.jsonl", "-o", "out.csv", "--bundle", "bundle"])
    assert result.exit_code == 1  # one line was rejected, and said so
    assert "line 2" in result.output
    scored = pd.read_csv("out.csv")
    assert list(scored["lead_id"]) == leads["lead_id"].tolist()


def test_cli_refuses_too_little_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    assert runner.invoke(app, ["simulate", "--leads", "40", "--seed", "1", "--out", "tiny"]).exit_code == 0
    grid = "default"  # the built-in grid
    result = runner.invoke(app, ["train", "--data", "tiny", "--grid", str(grid), "--no-mlflow"])
    assert result.exit_code == 2
    assert "refusing to train" in result.output


def test_snapshot_features_reject_unknown_snapshot_lead(simulated_dataset) -> None:
    snaps = pd.DataFrame({"lead_id": ["nope"], "as_of": [pd.Timestamp("2024-05-01", tz="UTC")]})
    with pytest.raises(ValueError, match="unknown lead_id"):
        snapshot_features(simulated_dataset.leads, simulated_dataset.interactions, snaps, ProjectConfig().features)


def test_an_isotonic_calibration_keeps_the_model_order_inside_steps_and_past_its_knots() -> None:
    """Flat isotonic steps would tie leads the model tells apart; new leads past the last knot would all tie."""
    from training.pipeline import _fit_one

    rng = np.random.default_rng(0)
    raw = rng.normal(size=3000)
    y = (rng.random(3000) < 1 / (1 + np.exp(-2 * raw))).astype(int)
    calibration = _fit_one("isotonic", raw, y)
    alone = calibration.model_copy(update={"blend": 0.0})
    grid = np.linspace(raw.min() - 3, raw.max() + 3, 2000)  # past both ends of the knots
    assert np.unique(alone.apply(grid)).size < grid.size / 2  # the flat map ties most of them
    p = calibration.apply(grid)
    assert (np.diff(p) > 0).all()
    assert np.abs(p - alone.apply(grid)).max() <= 0.05
