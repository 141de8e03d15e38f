"""A model refit on every row is calibrated as itself: its recipe cross-fitted on the latest rows."""

from __future__ import annotations

import numpy as np
import pytest

from training.crossfit import FOLDS, LATEST_SHARE, cross_fitted_raw, latest_blocks


def test_latest_blocks_are_consecutive_recent_and_keep_a_lead_whole() -> None:
    rng = np.random.default_rng(0)
    leads = np.repeat(np.arange(400), 3)  # three snapshots per lead
    created = np.repeat(rng.permutation(400).astype(float), 3)
    blocks = latest_blocks(created, leads)
    assert len(blocks) == FOLDS
    union = np.logical_or.reduce(blocks)
    assert not np.any(np.sum(blocks, axis=0) > 1), "a row in two blocks"
    # The latest share of leads, and only those.
    assert set(leads[union]) == set(leads[created >= np.quantile(created[::3], 1 - LATEST_SHARE)])
    for block in blocks:  # a lead's snapshots are all in one block
        inside = set(leads[block])
        assert all(block[leads == lead].all() for lead in inside)
    # Consecutive: every lead of block k came before every lead of block k+1.
    for early, late in zip(blocks, blocks[1:], strict=False):
        assert created[early].max() < created[late].min()


def test_too_few_recent_rows_are_refused_with_the_count() -> None:
    with pytest.raises(ValueError, match="at least 50 recent rows, got 30"):
        latest_blocks(np.arange(100, dtype=float))


def test_each_block_is_scored_by_a_fit_that_never_saw_it() -> None:
    seen: list[np.ndarray] = []

    def fit_on(mask: np.ndarray):
        seen.append(mask.copy())
        return lambda where: np.where(mask[where], np.nan, 1.0)  # NaN if the fit saw the row

    blocks = latest_blocks(np.arange(600, dtype=float))
    positions, raw = cross_fitted_raw(fit_on, blocks)
    assert not np.isnan(raw).any()
    assert sorted(positions.tolist()) == np.flatnonzero(np.logical_or.reduce(blocks)).tolist()
    assert len(seen) == len(blocks)


def test_the_served_static_model_carries_its_own_cross_fitted_calibration(static_export, monkeypatch: pytest.MonkeyPatch) -> None:
    import training.crossfit as crossfit
    from features.contract import validate_static
    from features.grid import PointGrid
    from features.spec import FeatureSpec
    from training.config import ProjectConfig
    from training.pipeline import fit_calibration
    from training.selection import run_chosen_static_training
    from training.selection_config import SelectionConfig
    from training.static import evaluation_plan

    n = 1200
    spec = FeatureSpec(categorical=["source"], numeric=["minutes", "visits"], email_column=None, interactions=False)
    data = validate_static(static_export(n, 5).drop(columns=["status"]).assign(order=np.arange(n, dtype=float)), spec)
    config = ProjectConfig().training.model_copy(update={"n_bootstrap": 0})
    grid = PointGrid.model_validate(
        {"name": "t", "mql_threshold": 10, "rules": [{"label": "Referral", "points": 10, "feature": "source", "in": ["Referral"]}]}
    )
    calls: list[tuple[np.ndarray, np.ndarray]] = []
    real = crossfit.cross_fitted_raw

    def spy(fit_on, blocks):
        positions, raw = real(fit_on, blocks)
        calls.append((positions, raw))
        return positions, raw

    monkeypatch.setattr(crossfit, "cross_fitted_raw", spy)
    result, _ = run_chosen_static_training(data, spec, config, grid, evaluation_plan(data, config), SelectionConfig())
    # One cross-fit calibrates the measured recipe (on the rows before the test part), the last
    # one the served refit (on every row, so its latest blocks are in the test part).
    assert len(calls) == 2, "one cross-fit for the measured model, one for the served refit"
    positions, raw = calls[-1]
    assert positions.max() == n - 1
    y = data.leads["converted"].to_numpy()
    expected, _ = fit_calibration(raw, y[positions], config.seed)
    assert result.model.meta.calibration == expected
    # The cross-fitted rows are the latest by order.
    assert data.leads["order"].to_numpy()[positions].min() >= n * (1 - crossfit.LATEST_SHARE) - 1
