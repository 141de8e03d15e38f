"""X Education, a real CRM export, end to end (skipped when ../shared/datasets/x-education is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from leadscore.cli import app
from model.bundle import ScoringModel
from sources.loader import load_project_data
from training.config import load_config
from training.leakage import guard_input_for_static, run_guard

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LEADS_CSV = PROJECT_ROOT.parent / "shared" / "datasets" / "x-education" / "Leads.csv"
EXAMPLE = PROJECT_ROOT / "examples" / "x-education.yaml"
POST_OUTCOME = {
    "tags", "lead_quality", "lead_profile", "asymmetrique_activity_index", "asymmetrique_profile_index",
    "asymmetrique_activity_score", "asymmetrique_profile_score", "last_activity", "last_notable_activity",
}

pytestmark = [
    pytest.mark.xeducation,
    pytest.mark.slow,
    pytest.mark.skipif(not LEADS_CSV.is_file(), reason=f"{LEADS_CSV} is absent (the export is not part of the project)"),
]


def test_one_command_trains_a_standard_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the example's paths are read from its own folder, not the working one
    result = CliRunner().invoke(
        app,
        ["train", "--config", str(EXAMPLE), "--no-mlflow", "--bundle-out", str(tmp_path / "bundle"),
         "--metrics-out", str(tmp_path / "m.json"), "--quarantine-out", str(tmp_path / "q.csv")],
    )
    assert result.exit_code == 0, result.output
    assert "ordered split: test = last 20% by Lead Number" in result.output
    model = ScoringModel.load(tmp_path / "bundle")
    assert not POST_OUTCOME & set(model.feature_names)
    assert model.spec.behaviour_features() == []
    metrics = json.loads((tmp_path / "m.json").read_text())
    auc = {name: metrics[name]["roc_auc"]["value"] for name in ("model", "point_grid", "logistic_regression")}
    assert auc["model"] > auc["logistic_regression"] > auc["point_grid"]
    assert auc["model"] >= 0.88  # ordered split by Lead Number, post-outcome columns out


def test_guard_flags_tags_and_lead_quality_by_itself() -> None:
    config = load_config(EXAMPLE)
    assert config.data is not None
    project = load_project_data(config.data, config.features, leads_path=LEADS_CSV)
    report = run_guard(guard_input_for_static(project.dataset, config.features, config.training.test_fraction))  # no post_outcome list
    assert {"tags", "lead_quality"} <= set(report.flagged_columns())
    honest = {"total_time_spent_on_website", "lead_origin", "lead_source", "occupation"}
    assert not honest & set(report.flagged_columns())


def test_static_cross_validation_without_the_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = yaml.safe_load(EXAMPLE.read_text())
    del raw["data"]["leads"]["order"]
    raw["data"]["leads"]["source"]["path"] = str(LEADS_CSV)
    raw["training"]["grid"] = str(EXAMPLE.parent / raw["training"]["grid"])  # relative to the example's folder
    (tmp_path / "cv.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["train", "--config", "cv.yaml", "--no-mlflow", "--metrics-out", "m.json"])
    assert result.exit_code == 0, result.output
    folds = json.loads(Path("m.json").read_text())["evaluation"]["mean_fold_roc_auc"]
    assert folds["model"] > folds["logistic_regression"] > folds["point_grid"]
    assert folds["model"] >= 0.875
