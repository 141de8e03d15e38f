"""Retraining lifecycle: rollback through the real MLflow registry, backtest (the promotion rule: test_gate.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from model.registry import RegistryConfig, RegistryError, champion_version, rollback_champion
from sources.grids import load_grid
from training.config import ProjectConfig
from training.lifecycle import as_of_history, backtest

DEFAULT_GRID = "default"  # the grid leadscore ships (sources/builtin_grids/default.yaml)


def test_history_as_of_hides_the_future(simulated_dataset) -> None:
    cutoff = simulated_dataset.leads["created_at"].quantile(0.5)
    past = as_of_history(simulated_dataset, cutoff)
    assert (past.leads["created_at"] <= cutoff).all()
    assert (past.leads["converted_at"].dropna() <= cutoff).all()
    assert (past.interactions["occurred_at"] <= cutoff).all()
    assert past.data_end <= cutoff
    assert past.leads["converted_at"].notna().sum() < simulated_dataset.leads["converted_at"].notna().sum()


def test_retrain_then_rollback(training_result, simulated_dataset, tmp_path: Path) -> None:
    from training.tracking import log_training_run

    registry = RegistryConfig(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_location=str(tmp_path / "a"))
    config = ProjectConfig(registry=registry)
    with pytest.raises(RegistryError, match="no such database"):  # a missing store is not created
        rollback_champion(registry)
    assert not (tmp_path / "mlflow.db").exists()
    assert champion_version(registry) is None  # creates the empty registry: rollback reads an existing one
    with pytest.raises(LookupError, match="nothing to roll back"):
        rollback_champion(registry)
    assert log_training_run(training_result, simulated_dataset, config).promoted
    # A retrain that is as good as the champion (within tolerance) and passes the gate is promoted.
    second = log_training_run(training_result, simulated_dataset, config, tolerance=0.005)
    assert second.promoted, second.decision
    assert champion_version(registry) == "2"
    assert rollback_champion(registry) == ("2", "1")
    assert champion_version(registry) == "1"
    with pytest.raises(LookupError, match="replaced no earlier version"):
        rollback_champion(registry)


def test_backtest_reports_each_period(simulated_dataset) -> None:
    config = ProjectConfig().training
    config.n_bootstrap = 0
    config.lightgbm.max_rounds = 200
    # Each period's labels must close before the next period starts, which costs two horizons of
    # history per training run: 300 days hold that for a 45-day horizon, not for 90 days.
    config.horizon_days = 45
    table = backtest(
        simulated_dataset,
        ProjectConfig().features,
        config,
        load_grid(DEFAULT_GRID),
        every_days=60,
        first_cutoff=simulated_dataset.leads["created_at"].min() + pd.Timedelta(days=300),
    )
    assert list(table.columns) == [
        "period_start", "period_end", "n_snapshots", "n_conversions", "retrained_auc", "not_refit_auc", "never_retrained_auc",
        "grid_auc",
    ]
    assert len(table) >= 2
    # The first period is scored by the same model either way.
    assert table.loc[0, "retrained_auc"] == pytest.approx(table.loc[0, "never_retrained_auc"])
    assert (table["retrained_auc"] > 0.5).all()
