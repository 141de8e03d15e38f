"""Drift monitoring (PSI against the bundle's reference) and the score log's two stores."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from leadscore.cli import app as cli
from model.bundle import ScoringModel
from model.monitoring import bin_counts, categorical_bins, drift_status, numeric_bins, psi
from model.scorelog import JsonLinesScoreLog, ScoreRecord, SqlScoreLog, lead_pseudonym, open_score_log

NOW = datetime.now(UTC)


@pytest.mark.parametrize(
    ("reference", "recent", "expected"),
    [
        ([0.5, 0.5], [0.5, 0.5], 0.0),
        ([0.5, 0.5], [0.6, 0.4], 0.1 * np.log(1.2) - 0.1 * np.log(0.8)),
        ([0.25, 0.25, 0.25, 0.25, 0.0], [0.1, 0.2, 0.3, 0.4, 0.0], None),
    ],
)
def test_psi(reference: list[float], recent: list[float], expected: float | None) -> None:
    value = psi(reference, recent)
    assert value >= 0
    if expected is not None:
        assert value == pytest.approx(expected)
    assert psi(recent, recent) == 0.0


@pytest.mark.parametrize(("value", "status"), [(0.0, "ok"), (0.0999, "ok"), (0.1, "watch"), (0.1999, "watch"), (0.2, "drift"), (3.0, "drift")])
def test_drift_status_thresholds(value: float, status: str) -> None:
    assert drift_status(value) == status


def test_numeric_bins_handle_repeats_and_missing() -> None:
    values = np.array([0.0] * 70 + [1.0] * 20 + [5.0] * 5 + [np.nan] * 5)

    bins = numeric_bins(values)

    assert bins.edges == [0.0, 1.0]  # the deciles of 70 % zeros and 20 % ones collapse to two edges
    assert bins.proportions == pytest.approx([0.70, 0.20, 0.05, 0.05])
    assert bin_counts(bins, pd.Series([0.0, 0.5, 7.0, None, "n/a"], dtype=object)).tolist() == [1, 1, 1, 2]


def test_categorical_bins_put_unseen_values_in_other() -> None:
    bins = categorical_bins(np.array(["a", "a", "b", None], dtype=object))

    assert bins.levels == ["a", "b"]
    assert bins.proportions == pytest.approx([0.5, 0.25, 0.0, 0.25])
    assert bin_counts(bins, np.array(["a", "z", None, "b"], dtype=object)).tolist() == [1, 1, 1, 1]


def test_a_bundle_keeps_its_reference_and_an_old_bundle_still_loads(trained_bundle: Path, tmp_path: Path) -> None:
    model = ScoringModel.load(trained_bundle)
    assert model.meta.reference is not None
    assert set(model.meta.reference.features) == set(model.feature_names)
    assert sum(model.meta.reference.probability.proportions) == pytest.approx(1.0)

    old = tmp_path / "old"
    old.mkdir()
    (old / "model.txt").write_text((trained_bundle / "model.txt").read_text())
    meta = json.loads((trained_bundle / "bundle.json").read_text())
    del meta["reference"]
    (old / "bundle.json").write_text(json.dumps(meta))
    assert ScoringModel.load(old).meta.reference is None


def records_of(rows, probabilities: np.ndarray, model_version: str, n: int) -> list[ScoreRecord]:
    return [
        ScoreRecord(NOW, f"lead-{i}", model_version, NOW, float(probabilities[i]), 50, "warm", rows.row(i))
        for i in range(n)
    ]


@pytest.fixture
def recent_log(training_result, simulated_dataset, trained_bundle: Path, tmp_path: Path) -> Path:
    """A score log of the leads that followed the training period, as the service would have
    written it: each of those leads scored at the snapshot offsets, whether or not its label has
    matured since (the service knows no label; the validation rows of training keep only
    matured ones, which leaves out the older snapshots of the period's last leads)."""
    from features.engine import snapshot_features
    from features.snapshots import snapshot_times
    from training.config import ProjectConfig

    model = ScoringModel.load(trained_bundle)
    leads = simulated_dataset.leads
    period = leads[(leads["created_at"] >= pd.Timestamp(training_result.split["valid_start"]))
                   & (leads["created_at"] < pd.Timestamp(training_result.split["test_start"]))]  # fmt: skip
    snaps = snapshot_times(period, ProjectConfig().training.snapshot_offsets_days, simulated_dataset.data_end)
    rows = snapshot_features(leads, simulated_dataset.interactions, snaps, model.spec)
    probability = model.probability(model.encode(rows))
    log = JsonLinesScoreLog(tmp_path / "scores.jsonl")
    log.write(records_of(rows, probability, model.meta.model_version, len(snaps)))
    log.write(records_of(rows, probability, "another-version", 10))
    return log.path


def test_monitor_sees_no_drift_in_the_period_after_training(recent_log: Path, trained_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "drift.json"

    result = CliRunner().invoke(
        cli, ["monitor", "--log", str(recent_log), "--bundle", str(trained_bundle), "--out", str(out), "--fail-on-drift"]
    )

    assert result.exit_code == 0, result.output
    assert "left out: 10 scores of other model versions" in result.output
    table = pd.DataFrame(json.loads(out.read_text())["variables"])
    assert table.loc[0, "variable"] == "probability"
    # The probability reference is this period's validation rows; the log holds every snapshot
    # of the same leads (the unmatured ones too): the same period, so no drift and not even watch.
    assert table.loc[0, "status"] == "ok" and table.loc[0, "psi"] < 0.1
    assert (table["status"] != "drift").all(), table[table["status"] == "drift"]


def test_monitor_flags_a_change_in_the_mix_of_lead_ages(training_result, trained_bundle: Path, tmp_path: Path) -> None:
    # The test period has no 90-day snapshots (their labels had not matured): 10 % of the
    # training rows are 90 days old, none of these. A CRM that stops rescoring old leads looks so.
    version = ScoringModel.load(trained_bundle).meta.model_version
    test = training_result.test
    log = JsonLinesScoreLog(tmp_path / "scores.jsonl")
    log.write(records_of(test.rows, test.scores["model"], version, len(test.snapshots)))
    out = tmp_path / "drift.json"

    result = CliRunner().invoke(cli, ["monitor", "--log", str(log.path), "--bundle", str(trained_bundle), "--out", str(out)])

    assert result.exit_code == 0, result.output  # without --fail-on-drift, drift is reported, not an error
    table = pd.DataFrame(json.loads(out.read_text())["variables"]).set_index("variable")
    assert table.loc["lead_age_days", "status"] == "drift"
    assert table.loc["industry", "status"] == "ok"


def test_monitor_flags_shifted_features_and_scores(training_result, trained_bundle: Path, tmp_path: Path) -> None:
    version = ScoringModel.load(trained_bundle).meta.model_version
    test = training_result.test
    n = len(test.snapshots)
    rows = test.rows
    shifted = type(rows)(
        categorical={**rows.categorical, "industry": np.full(n, "retail", dtype=object)},
        numeric={**rows.numeric, "n_pricing_page_view_total": rows.numeric["n_pricing_page_view_total"] + 5},
    )
    log = JsonLinesScoreLog(tmp_path / "scores.jsonl")
    log.write(records_of(shifted, np.clip(test.scores["model"] * 3, 0, 1), version, n))

    result = CliRunner().invoke(cli, ["monitor", "--log", str(log.path), "--bundle", str(trained_bundle), "--fail-on-drift"])

    assert result.exit_code == 1, result.output
    assert "probability PSI" in result.output and "(drift)" in result.output
    assert "'industry'" in result.output and "'n_pricing_page_view_total'" in result.output


def test_monitor_recomputes_a_missing_reference_from_data(
    recent_log: Path, trained_bundle: Path, simulated_dir: Path, tmp_path: Path
) -> None:
    old = tmp_path / "old"
    old.mkdir()
    (old / "model.txt").write_text((trained_bundle / "model.txt").read_text())
    meta = json.loads((trained_bundle / "bundle.json").read_text())
    del meta["reference"]
    (old / "bundle.json").write_text(json.dumps(meta))

    refused = CliRunner().invoke(cli, ["monitor", "--log", str(recent_log), "--bundle", str(old)])
    recomputed = CliRunner().invoke(cli, ["monitor", "--log", str(recent_log), "--bundle", str(old), "--reference", str(simulated_dir)])

    assert refused.exit_code == 2 and "no reference distribution" in refused.output
    assert recomputed.exit_code == 0, recomputed.output
    assert "probability PSI" in recomputed.output


def test_monitor_with_no_recent_scores_says_so(recent_log: Path, trained_bundle: Path) -> None:
    result = CliRunner().invoke(
        cli, ["monitor", "--log", str(recent_log), "--bundle", str(trained_bundle), "--since", (NOW + timedelta(days=1)).date().isoformat()]
    )
    assert result.exit_code == 2
    assert "no score of model" in result.output


def test_sql_score_log_round_trip(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/scores.db"
    log = open_score_log(url)
    assert isinstance(log, SqlScoreLog)
    key = b"k" * 16
    earlier = NOW - timedelta(days=10)
    records = [
        ScoreRecord(earlier, lead_pseudonym("old@example.com", key), "v1", earlier, 0.1, 10, "cold", {"n": 1.0}),
        ScoreRecord(NOW, lead_pseudonym("jane@example.com", key), "v1", NOW, 0.2, 60, "warm", {"n": float("nan"), "c": "x"}),
        ScoreRecord(NOW, lead_pseudonym("jane@example.com", key), "v1", NOW, 0.3, 70, "warm", {"n": 2.0, "c": None}),
    ]
    log.write(records)

    recent, unreadable = open_score_log(url).read(since=NOW - timedelta(days=1))

    assert unreadable == 0
    assert recent["probability"].tolist() == [0.2, 0.3]
    assert recent["features"].tolist() == [{"n": None, "c": "x"}, {"n": 2.0, "c": None}]
    assert recent["logged_at"].iloc[0] == pd.Timestamp(NOW).floor("us")
    assert log.forget(lead_pseudonym("jane@example.com", key)) == 2
    assert len(log.read()[0]) == 1
    assert "jane" not in (tmp_path / "scores.db").read_bytes().decode("latin-1")


def test_an_unwritable_score_log_is_named(tmp_path: Path) -> None:
    from model.scorelog import ScoreLogError

    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(ScoreLogError, match=str(blocked)):
        open_score_log(str(blocked / "scores.jsonl"))
    with pytest.raises(ScoreLogError, match="cannot open"):
        open_score_log("nosuchdriver://x")
