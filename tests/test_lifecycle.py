"""Retraining lifecycle: rollback through the real MLflow registry, backtest (the promotion rule: test_gate.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from model.registry import RegistryConfig, RegistryError, champion_version, rollback_champion
from sources.grids import load_grid
from training.config import ProjectConfig
from training.lifecycle import _gain, as_of_history, backtest

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
    gains = [f"gain_over_{name}{part}" for name in ("never_retrained", "not_refit") for part in ("", "_ci_low", "_ci_high")]
    assert list(table.columns) == [
        "period_start", "period_end", "n_snapshots", "n_conversions", "retrained_auc", "not_refit_auc", "never_retrained_auc",
        "grid_auc", *gains,
    ]
    assert len(table) >= 2
    # The first period is scored by the same model either way.
    assert table.loc[0, "retrained_auc"] == pytest.approx(table.loc[0, "never_retrained_auc"])
    assert table.loc[0, "gain_over_never_retrained"] == pytest.approx(0.0)
    assert (table["retrained_auc"] > 0.5).all()
    # Each gain is the difference of the two AUCs of its row.
    for name in ("never_retrained", "not_refit"):
        assert table[f"gain_over_{name}"].to_numpy() == pytest.approx((table["retrained_auc"] - table[f"{name}_auc"]).to_numpy())


def test_a_period_gain_has_a_paired_interval_by_lead() -> None:
    rng = np.random.default_rng(3)
    leads = np.repeat(np.arange(400), 3)
    signal = rng.normal(size=400)[leads]
    y = (signal + rng.normal(size=leads.size) > 1.0).astype(int)
    config = ProjectConfig().training
    config.n_bootstrap = 100

    better = _gain("never_retrained", y, signal, signal + rng.normal(scale=2.0, size=leads.size), leads, config)
    same = _gain("not_refit", y, signal, signal, leads, config)
    nothing = _gain("not_refit", np.zeros(leads.size, dtype=int), signal, signal, leads, config)

    assert 0 < better["gain_over_never_retrained_ci_low"] < better["gain_over_never_retrained"] < better["gain_over_never_retrained_ci_high"]
    assert same == {"gain_over_not_refit": 0.0, "gain_over_not_refit_ci_low": 0.0, "gain_over_not_refit_ci_high": 0.0}
    assert all(np.isnan(v) for v in nothing.values())  # a period without conversions has no AUC
