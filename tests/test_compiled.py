"""The compiled forest (lleaves) gives LightGBM's raw scores bit for bit, and is cached per model."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from model.compiled import CompiledForest, CompileMode
from model.scoring import score_table

pytest.importorskip("lleaves")


def _small_booster(seed: int = 0) -> tuple[lgb.Booster, np.ndarray]:
    # A categorical column, a column with missing values and a plain one: the three ways a
    # split reads a value.
    rng = np.random.default_rng(seed)
    n = 600
    category = rng.integers(0, 6, n).astype(float)
    sparse = np.where(rng.random(n) < 0.4, np.nan, rng.normal(size=n))
    plain = rng.normal(size=n)
    logit = (category == 2) * 1.5 - (category == 4) + np.nan_to_num(sparse) + 0.5 * plain
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    X = np.column_stack([category, sparse, plain])
    params = {"objective": "binary", "num_leaves": 7, "min_data_in_leaf": 10, "verbose": -1, "seed": seed}
    booster = lgb.train(params, lgb.Dataset(X, y, categorical_feature=[0]), num_boost_round=60)
    return booster, X


def test_compiled_raw_scores_equal_lightgbm_bit_for_bit(tmp_path: Path) -> None:
    booster, X = _small_booster()
    # Unseen category levels (7, 40, -1) and missing values everywhere a split can meet them.
    probe = np.vstack([X, [[7, np.nan, 0.1], [40, 0.3, np.nan], [-1, np.nan, np.nan], [np.nan] * 3]])
    forest = CompiledForest.for_booster(booster, compile_if_missing=True, cache=tmp_path)
    assert forest is not None
    expected = booster.predict(probe, raw_score=True)
    np.testing.assert_array_equal(forest.raw(probe), expected)
    many = np.repeat(probe, 5, axis=0)  # enough rows for the threaded path
    np.testing.assert_array_equal(forest.raw(many), booster.predict(many, raw_score=True))


def test_compiled_forest_is_cached_per_model(tmp_path: Path) -> None:
    booster, X = _small_booster()
    assert CompiledForest.for_booster(booster, compile_if_missing=False, cache=tmp_path) is None
    first = CompiledForest.for_booster(booster, compile_if_missing=True, cache=tmp_path)
    assert first is not None and first.path.is_file()
    written = first.path.stat().st_mtime_ns
    again = CompiledForest.for_booster(booster, compile_if_missing=False, cache=tmp_path)
    assert again is not None and again.path == first.path
    assert again.path.stat().st_mtime_ns == written  # loaded, not compiled again
    np.testing.assert_array_equal(again.raw(X), booster.predict(X, raw_score=True))
    other, _ = _small_booster(seed=1)
    assert CompiledForest.for_booster(other, compile_if_missing=False, cache=tmp_path) is None


def test_score_table_is_the_same_with_the_compiled_forest(training_result, simulated_dataset, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADSCORE_COMPILED_DIR", str(tmp_path))
    data = simulated_dataset
    as_of = (data.data_end - pd.Timedelta(days=30)).to_pydatetime()
    model = type(training_result.model)(training_result.model.booster, training_result.model.meta)
    plain = score_table(model, data.leads, data.interactions, as_of, compiled=CompileMode.never)
    assert model.compiled_forest(len(plain), CompileMode.auto) is None  # small batch, nothing cached: no compile
    fast = score_table(model, data.leads, data.interactions, as_of, compiled=CompileMode.always)
    assert model.compiled_forest(len(fast), CompileMode.auto) is not None
    pd.testing.assert_frame_equal(fast, plain)


def test_a_damaged_cache_entry_falls_back_to_lightgbm(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    booster, _X = _small_booster()
    forest = CompiledForest.for_booster(booster, compile_if_missing=True, cache=tmp_path)
    assert forest is not None
    forest.path.with_suffix(".txt").unlink()  # the model text beside the object code is gone
    assert CompiledForest.for_booster(booster, compile_if_missing=False, cache=tmp_path) is None
    assert "cannot be loaded" in caplog.text
