"""An export in time order with no id and no date: the row number is the id and the clock."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from training.config import load_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BANK = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "bank-marketing" / "bank-full.csv"


def _export(folder: Path, n: int = 600) -> Path:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({
        "job": rng.choice(["admin.", "student", "retired"], n), "balance": rng.integers(-500, 5000, n),
        "duration": rng.integers(5, 900, n), "y": np.where(rng.random(n) < np.linspace(0.05, 0.4, n), "yes", "no"),
    })  # fmt: skip
    frame.to_csv(folder / "bank.csv", sep=";", index=False)
    config = {
        "data": {
            "leads": {"source": {"path": "bank.csv", "csv": {"separator": ";"}}, "id": {"row_number": True},
                      "outcome": {"column": "y"}, "order": {"row_number": True}},
            "columns": {"categorical": ["job"], "numeric": ["balance", "duration"], "post_outcome": ["duration"]},
        },
    }  # fmt: skip
    path = folder / "bank.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_row_number_is_the_id_and_the_order(tmp_path: Path) -> None:
    from sources.loader import load_project_data

    config = load_config(_export(tmp_path))
    assert config.data is not None and config.data.leads.order_name() == "row number"
    project = load_project_data(config.data, config.features)
    leads = project.dataset.leads
    assert leads["lead_id"].tolist()[:3] == ["row-1", "row-2", "row-3"]
    assert leads["order"].tolist() == list(np.arange(1, 601, dtype=float))
    assert project.post_outcome == ["duration"]


def test_the_bank_example_reads_its_export_in_time_order_without_duration() -> None:
    config = load_config(EXAMPLES / "bank-marketing.yaml")
    assert config.data is not None
    leads = config.data.leads
    assert leads.id_column is None and leads.order_name() == "row number" and leads.created_at is None
    assert "duration" in config.data.columns.post_outcome
    # The contact date without its year is not declared (a clock column, docs/byo-data.md).
    declared = {*config.data.columns.categorical, *config.data.columns.numeric}
    assert not {"month", "day"} & declared
    from sources.grids import load_grid

    grid = load_grid(config.training.grid)
    assert 8 <= len(grid.rules) <= 10
    assert set(grid.required_features()) <= set(config.features.feature_names()) - {"duration"}


@pytest.mark.skipif(not BANK.is_file(), reason="the Bank Marketing export is not in ../shared/datasets")
def test_the_bank_export_loads_with_duration_left_out_by_the_guard() -> None:
    from sources.loader import load_project_data
    from training.leakage import guard_input_for_static, run_guard

    config = load_config(EXAMPLES / "bank-marketing.yaml")
    assert config.data is not None
    project = load_project_data(config.data, config.features)
    data = project.dataset
    assert len(data.leads) == 45_211 and data.leads["lead_id"].iloc[-1] == "row-45211"
    report = run_guard(guard_input_for_static(data, config.features, 0.2, post_outcome=project.post_outcome))  # type: ignore[arg-type]
    assert "duration" in report.excluded()
    drift = next(f for f in report.findings if f.column == "(row order)")
    assert "drifts" in drift.detail  # the rate rises over time: not a sort by outcome
