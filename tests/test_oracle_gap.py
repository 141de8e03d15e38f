"""`python -m benchmarks.oracle_gap`: its figures are read from the same test rows throughout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import oracle_gap


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("oracle-gap") / "gap.json"
    return oracle_gap.main(["--leads", "2500", "--seed", "5", "--more", "3000", "--bootstrap", "20", "--out", str(out)]), out


def test_the_gap_is_the_oracle_s_auc_less_the_model_s_with_its_interval_around_it(figures: tuple[dict, Path]) -> None:
    result, out = figures
    auc, gap = result["roc_auc"], result["oracle_minus_model"]
    assert gap["value"] == pytest.approx(auc["oracle"]["value"] - auc["model"]["value"], abs=1e-9)
    assert gap["ci_low"] <= gap["value"] <= gap["ci_high"]
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))


def test_the_offsets_partition_the_test_rows(figures: tuple[dict, Path]) -> None:
    result, _ = figures
    assert sum(entry["rows"] for entry in result["by_offset"].values()) == result["test_rows"]


def test_the_gain_of_more_leads_is_the_difference_of_the_two_gaps_on_the_same_rows(figures: tuple[dict, Path]) -> None:
    result, _ = figures
    more = result["more_leads"]
    assert more["seed"] != result["seed"]  # other leads, never the measured ones
    assert more["gain"]["value"] == pytest.approx(result["oracle_minus_model"]["value"] - more["oracle_minus_model"]["value"], abs=1e-9)


def test_the_gap_splits_into_the_future_and_what_the_features_leave(figures: tuple[dict, Path]) -> None:
    result, _ = figures
    auc = result["roc_auc"]
    future, left = result["oracle_minus_present_oracle"], result["present_oracle_minus_model"]
    assert future["value"] == pytest.approx(auc["oracle"]["value"] - result["present_oracle_roc_auc"], abs=1e-9)
    assert future["value"] + left["value"] == pytest.approx(result["oracle_minus_model"]["value"], abs=1e-9)


def test_a_config_file_sets_what_is_measured(tmp_path: Path) -> None:
    config = tmp_path / "leadscore.yaml"
    config.write_text("training:\n  snapshot_offsets_days: [0, 7]\n  n_bootstrap: 500\n")

    result = oracle_gap.main(["--leads", "2500", "--seed", "5", "--more", "0", "--bootstrap", "10", "--config", str(config)])

    assert sorted(result["by_offset"]) == ["0", "7"]  # the file's snapshots, not the default six offsets
    assert result["config"] == str(config)
