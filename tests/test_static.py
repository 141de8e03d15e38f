"""Static exports end to end: CLI with --allow-column, a standard bundle, scoring, refusals."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from features.engine import lead_features, snapshot_features
from features.spec import FeatureSpec
from leadscore.cli import app
from model.bundle import ScoringModel
from training.pipeline import NotEnoughDataError, check_enough

GRID = {
    "name": "test-sales",
    "mql_threshold": 20,
    "rules": [
        {"label": "Referral", "points": 20, "feature": "lead_source", "in": ["Referral"]},
        {"label": "Long visit", "points": 15, "feature": "minutes_on_site", "min": 15},
    ],
}


def _export(folder: Path, make_export, n: int = 700, seed: int = 0, order: bool = False) -> Path:
    """The static export as a user has it: their column names, yes/no outcome, a semicolon CSV."""
    frame = make_export(n, seed).rename(
        columns={"lead_id": "Lead ID", "source": "Lead Source", "status": "Status", "minutes": "Minutes on site", "visits": "Visits"}
    )
    frame["Converted"] = np.where(frame.pop("converted") == 1, "Yes", "No")
    if order:
        frame["Lead Number"] = np.arange(len(frame)) + 1000
    frame.to_csv(folder / "export.csv", sep=";", index=False)
    (folder / "grid.yaml").write_text(yaml.safe_dump(GRID))
    config = {
        "data": {
            "leads": {
                "source": {"path": str(folder / "export.csv"), "csv": {"separator": ";"}},
                "id": "Lead ID",
                "outcome": {"column": "Converted"},
                **({"order": "Lead Number"} if order else {}),
            },
            "columns": {"categorical": ["Lead Source", "Status"], "numeric": ["Minutes on site", "Visits"]},
        },
        "training": {"grid": str(folder / "grid.yaml"), "n_bootstrap": 20},
        "registry": {"tracking_uri": f"sqlite:///{folder}/mlflow.db", "artifact_location": str(folder / "artifacts")},
    }
    path = folder / "leadscore.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_static_train_excludes_the_leak_and_allow_column_keeps_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, static_export) -> None:
    config = _export(tmp_path, static_export)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--config", str(config), "--no-mlflow", "--bundle-out", "b1", "--metrics-out", "m.json"])
    assert result.exit_code == 0, result.output
    assert "| status | single_column_auc |" in result.output
    assert "stratified 5-fold cross-validation" in result.output
    model = ScoringModel.load(tmp_path / "b1")
    assert "status" not in model.feature_names
    assert model.meta.training["leakage"] == {"flagged": ["status"], "allowed": [], "excluded": ["status"]}
    metrics = json.loads(Path("m.json").read_text())
    assert set(metrics) == {"model", "point_grid", "logistic_regression", "evaluation"}
    assert len(metrics["evaluation"]["fold_roc_auc"]["model"]) == 5
    assert metrics["model"]["roc_auc"]["value"] > metrics["point_grid"]["roc_auc"]["value"]

    # Keeping the flagged column on purpose (by its source name): used, and the run records it.
    result = runner.invoke(app, ["train", "--config", str(config), "--allow-column", "Status", "--bundle-out", "b2", "--run-name", "kept"])
    assert result.exit_code == 0, result.output
    assert "kept (--allow-column)" in result.output
    kept = ScoringModel.load(tmp_path / "b2")
    assert "status" in kept.feature_names
    assert kept.meta.training["leakage"]["allowed"] == ["status"]
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run = client.search_runs([client.get_experiment_by_name("leadscore").experiment_id])[0]
    assert run.data.tags["leakage.allowed"] == "status"
    assert run.data.tags["leakage.excluded"] == "-"
    assert run.data.tags["data.static"] == "true"
    assert "leakage.json" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_static_bundle_scores_through_the_standard_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, static_export) -> None:
    config = _export(tmp_path, static_export, order=True)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--config", str(config), "--no-mlflow", "--bundle-out", "bundle"])
    assert result.exit_code == 0, result.output
    assert "ordered split: test = last 20% by Lead Number (from 1560)" in result.output
    model = ScoringModel.load("bundle")
    assert model.spec.behaviour_features() == []
    assert model.feature_names == ["lead_source", "minutes_on_site", "visits"]

    lead = {
        "lead_id": "new-1",
        "created_at": "2025-01-01T00:00:00Z",
        "attributes": {"lead_source": "Referral", "minutes_on_site": 30.0, "visits": 4},
        "interactions": [{"type": "page_view", "occurred_at": "2025-01-01T01:00:00Z"}],
    }
    Path("in.jsonl").write_text(json.dumps(lead) + "\n" + json.dumps({**lead, "lead_id": "new-2", "attributes": {"lead_source": "Chat", "minutes_on_site": 1.0, "visits": 0}}) + "\n")
    result = runner.invoke(app, ["score", "-i", "in.jsonl", "-o", "out.jsonl", "--bundle", "bundle", "--as-of", "2025-01-02T00:00:00+00:00"])
    assert result.exit_code == 0, result.output
    scored = [json.loads(line) for line in Path("out.jsonl").read_text().splitlines()]
    assert scored[0]["probability"] > scored[1]["probability"]
    assert any("static export" in w for w in scored[0]["warnings"])
    assert scored[0]["point_grid"]["points"] == 35


def test_engine_handles_an_empty_behaviour_block() -> None:
    spec = FeatureSpec(categorical=["plan"], numeric=["seats"], email_column=None, interactions=False)
    created = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())
    rows = lead_features(created, {"plan": "pro", "seats": 3}, [created + 60], ["page_view"], created + 3600, spec)
    assert rows.to_frame(spec).columns.tolist() == ["plan", "seats"]
    leads = pd.DataFrame({"lead_id": ["a", "b"], "created_at": pd.to_datetime(["2024-01-01", "2024-01-02"], utc=True),
                          "plan": ["pro", None], "seats": [3.0, np.nan]})
    events = pd.DataFrame({"lead_id": ["a"], "occurred_at": pd.to_datetime(["2024-01-03"], utc=True), "type": ["page_view"]})
    snaps = pd.DataFrame({"lead_id": ["a", "b"], "as_of": pd.to_datetime(["2024-01-05", "2024-01-05"], utc=True)})
    batch = snapshot_features(leads, events, snaps, spec)
    assert list(batch.numeric) == ["seats"] and batch.row(0) == {"plan": "pro", "seats": 3.0}


@pytest.mark.parametrize(
    ("n", "seed", "order", "test_fraction", "message"),
    [
        (150, 0, False, 0.2, "the export is too small: 150 leads (need at least 200)"),
        (700, 0, True, 0.1, "the test part (last 10% by Lead Number) is too small: 70 leads (need at least 100)"),
    ],
)
def test_static_refusals_say_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, static_export, n: int, seed: int, order: bool, test_fraction: float, message: str
) -> None:
    config = _export(tmp_path, static_export, n=n, seed=seed, order=order)
    raw = yaml.safe_load(config.read_text())
    raw["training"]["test_fraction"] = test_fraction
    config.write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", "--config", str(config), "--no-mlflow"])
    assert result.exit_code == 2
    assert "refusing to train" in result.output and message in result.output


def test_too_few_conversions_is_refused_with_the_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, static_export) -> None:
    config = _export(tmp_path, static_export, n=400)
    frame = pd.read_csv(tmp_path / "export.csv", sep=";")
    converted = np.flatnonzero(frame["Converted"] == "Yes")
    frame.loc[converted[30:], "Converted"] = "No"  # keep 30 conversions
    frame.to_csv(tmp_path / "export.csv", sep=";", index=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", "--config", str(config), "--no-mlflow", "--allow-column", "status"])
    assert result.exit_code == 2
    assert "30 conversions (need at least 50)" in result.output


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ([0] * 60 + [1] * 5, "test period is too small: 65 snapshots (need at least 100); 5 conversions (need at least 10)"),
        ([1] * 150, "no non-conversions (need some)"),
    ],
)
def test_check_enough_names_each_shortfall(labels: list[int], expected: str) -> None:
    with pytest.raises(NotEnoughDataError) as error:
        check_enough("test period", pd.DataFrame({"label": labels}), 100, 10)
    assert expected in str(error.value)


def test_too_few_matured_labels_is_refused(simulated_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "long.yaml").write_text(yaml.safe_dump({"training": {"horizon_days": 530}}))
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    result = CliRunner().invoke(app, ["train", "--data", str(simulated_dir), "--config", str(tmp_path / "long.yaml"), "--no-mlflow"])
    assert result.exit_code == 2
    assert "too few matured labels:" in result.output and "(need at least 200)" in result.output


def test_static_bundle_is_evaluated_on_a_later_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, static_export) -> None:
    config = _export(tmp_path, static_export, order=True)
    later = tmp_path / "later"
    later.mkdir()
    _export(later, static_export, n=600, seed=1, order=True)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--config", str(config), "--no-mlflow", "--bundle-out", "bundle"])
    assert result.exit_code == 0, result.output

    result = runner.invoke(app, ["evaluate", "--config", str(config), "--bundle", "bundle", "--data", str(later / "export.csv"),
                                 "--metrics-out", "eval.json"])
    assert result.exit_code == 0, result.output
    assert "600 leads" in result.output
    metrics = json.loads(Path("eval.json").read_text())
    assert set(metrics) == {"model", "point_grid"}
    # The model reads the honest signals the grid reads, and visits besides.
    assert metrics["model"]["roc_auc"]["value"] > metrics["point_grid"]["roc_auc"]["value"]

    result = runner.invoke(app, ["report", "--bundle", "bundle", "--data", str(later)])
    assert result.exit_code != 0
    assert "static export" in result.output and "leadscore evaluate" in result.output

    result = runner.invoke(app, ["evaluate", "--config", str(config), "--bundle", "bundle", "--data", str(later)])
    assert result.exit_code != 0
    assert "must be a file" in result.output

    elsewhere = tmp_path / "no-config"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no leadscore.yaml here: the default config has no data: section
    result = runner.invoke(app, ["evaluate", "--bundle", str(tmp_path / "bundle"), "--data", str(later)])
    assert result.exit_code != 0
    assert "data: section" in result.output
